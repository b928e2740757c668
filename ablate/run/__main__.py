import sys

from .command import main

if "--submit" in sys.argv[1:]:  # python -m ablate.run STUDY --submit ...: ablate submit, its options too
    from .submit import main as submit

    sys.exit(submit([a for a in sys.argv[1:] if a != "--submit"]))
sys.exit(main())
