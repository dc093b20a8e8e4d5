#!/usr/bin/python3
"""init_raise: an import that fails at module level, uncaught: the runtime
reports it as init_error Runtime.ImportModuleError with a stack."""
import sluice_runtime

import sluice_no_such_module  # noqa: F401

sluice_runtime.start(lambda event, context: event)
