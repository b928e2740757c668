"""How claims and reports scale with a study's trials: ``python benchmarks/storage_scale.py``
(the same as ``ablate bench storage``; options: --trials 1000,10000 --workers 1,8 --claims 100
--split --code OLD_CHECKOUT ...). The benchmark itself is :mod:`ablate.run.bench_storage`; its table
for the 2-core machine is benchmarks/storage_scale.md."""
from __future__ import annotations

import sys

from ablate.run.bench_storage import main

if __name__ == "__main__":
    sys.exit(main())
