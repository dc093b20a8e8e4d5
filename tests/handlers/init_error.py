#!/usr/bin/python3
"""init_error: reports a failed init: sluice must fail the invocation with
Runtime.ImportModuleError and discard the environment."""
import sluice_runtime

sluice_runtime.init_error("Runtime.ImportModuleError", "no module named nothing")
