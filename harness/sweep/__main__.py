"""`python -m harness.sweep ...`: the same as `harness sweep ...` (the worker processes are started so)."""

import sys

from harness.sweep.cli import main

sys.exit(main())
