import sys

from .records import main

sys.exit(main())
