#!/usr/bin/python3
"""init_exit: exits with code 7 during init, before start(): sluice must
fail the invocation with Runtime.ExitError naming code 7."""
import sys

import sluice_runtime  # noqa: F401  (imported first, as handlers do)

print("init_exit: exiting with 7", file=sys.stderr)
sys.exit(7)
