import sys

from .blocks import main

sys.exit(main())
