"""``transfer:``: the study's cells ranked against a committed study's (the transfer check).

```yaml
transfer:
  reference: zoo                    # the committed study whose ordering is checked
  table: reports/zoo.csv            # its report's per-trial table (default: reports/<reference>.csv)
  by: mechanism                     # the factor both studies share: cells are matched by its value
  where: {data.task: global_cue}    # only the reference's trials with these settings (default: all,
                                    #   one tau per setting of its other factors)
  replicates: 2000                  # bootstrap replicates (seeds resampled within each cell)
  level: 0.95
  seed: 0
```

It never enters a cell key: the report's transfer section (:mod:`ablate.report.transfer`) reads
the reference's table when it is written. A relative ``table`` is read from the folder the command
runs in (the repository's root, where ``reports/`` is).
"""
from __future__ import annotations

import re

from ..config.errors import StudyError, brief
from ..config.specs import expect_mapping, unknown_keys

KEYS = ("reference", "table", "by", "where", "replicates", "level", "seed")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def transfer_spec(raw: dict, where: str) -> dict | None:
    """``transfer:`` checked (None when absent); ``by`` must be a factor of the study's grid."""
    if raw.get("transfer") is None:
        return None
    spec = expect_mapping(raw["transfer"], where, "transfer")
    unknown_keys(spec, KEYS, where, "transfer.")
    ref = spec.get("reference")
    if not isinstance(ref, str) or not _NAME.match(ref):
        raise StudyError(where, "transfer.reference", f"expected the name of a committed study (letters, digits, "
                         f"_ . -), e.g. zoo, whose report table reports/<name>.csv holds its trials; got {brief(ref)}.")
    table = spec.get("table", f"reports/{ref}.csv")
    if not isinstance(table, str) or not table.endswith(".csv"):
        raise StudyError(where, "transfer.table", f"expected the path of the reference's report table (a .csv "
                         f"written beside its report), e.g. reports/{ref}.csv; got {brief(table)}.")
    by = spec.get("by", "mechanism")
    factors = raw.get("factors")
    if not isinstance(by, str) or not isinstance(factors, dict) or not isinstance(factors.get(by), list):
        raise StudyError(where, "transfer.by", f"expected a factor of this study's grid (a list of values) whose "
                         f"values name the cells in both studies, e.g. mechanism; got {brief(by)}"
                         f"{'' if isinstance(factors, dict) else ' and no factors: section'}.")
    sel = expect_mapping(spec.get("where"), where, "transfer.where")
    for k, v in sel.items():
        if not isinstance(k, str) or k == by or isinstance(v, (dict, list)) or v is None:
            raise StudyError(where, f"transfer.where.{k}", f"expected a factor of the reference other than {by} "
                             f"and one value of it, e.g. data.task: global_cue; got {brief(k)}: {brief(v)}.")
    reps, level, seed = spec.get("replicates", 2000), spec.get("level", 0.95), spec.get("seed", 0)
    if not isinstance(reps, int) or isinstance(reps, bool) or not 200 <= reps <= 100_000:
        raise StudyError(where, "transfer.replicates", f"expected a whole number of bootstrap replicates from 200 "
                         f"to 100000, e.g. 2000; got {brief(reps)}.")
    if not isinstance(level, float) or not 0.5 <= level < 1:
        raise StudyError(where, "transfer.level", f"expected the interval's level between 0.5 and 1, e.g. 0.95; "
                         f"got {brief(level)}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise StudyError(where, "transfer.seed", f"expected a whole number >= 0 seeding the bootstrap; "
                         f"got {brief(seed)}.")
    return {"reference": ref, "table": table, "by": by, "where": {str(k): v for k, v in sel.items()},
            "replicates": reps, "level": level, "seed": seed}
