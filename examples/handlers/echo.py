#!/usr/bin/env python3
"""Demo handler: logs how many records each batch holds and succeeds.

It speaks sluice's native protocol once the runtime library lands
(runtime/python); until then the quickstart only loads and validates it."""
import sys

print("echo handler started", file=sys.stderr)
