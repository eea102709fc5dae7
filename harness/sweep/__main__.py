"""`python -m harness.sweep ...`: the same as `harness sweep ...` (the worker processes are started so)."""

import sys

from harness.sweep.cli import main

if __name__ == "__main__":  # importing the module (the fresh-import check) must not run the CLI
    sys.exit(main())
