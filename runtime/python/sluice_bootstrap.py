"""sluice_bootstrap: runtime python, Lambda's Python runtime on sluice.

sluice runs ``/usr/bin/python3 /var/runtime/python/sluice_bootstrap.py
<handler>`` with the function's `code` at /var/task (the working directory)
and ``_HANDLER`` set to the same handler string. It loads the handler as
Lambda's runtime (awslambdaric's bootstrap) does: ``app.lambda_handler``
imports module ``app`` and calls its ``lambda_handler(event, context)``;
``pkg/mod.fn`` and ``pkg.mod.fn`` import ``pkg.mod``. sys.path is Lambda's:
the task root first, then PYTHONPATH (the layers' python/lib/pythonX.Y/
site-packages and python/, then this directory), then the interpreter's.

A handler that cannot be loaded fails the environment's init with Lambda's
error types and messages:

- Runtime.MalformedHandlerName  "Bad handler 'x': ..."
- Runtime.BuiltInModuleConflict "Cannot use built-in module sys as a handler module"
- Runtime.ImportModuleError     "Unable to import module 'app': No module named 'app'"
- Runtime.UserCodeSyntaxError   "Syntax error in module 'app': invalid syntax (app.py, line 3)"
- Runtime.HandlerNotFound       "Handler 'fn' missing on module 'app'"
- an exception raised while the module runs: its class name and message

Everything else (the context, logging, SnapStart hooks, errors of an
invocation) is sluice_runtime's, speaking docs/PROTOCOL.md on fd 3.
"""

import os
import sys

# Our own modules first, before the task root goes in front: a file of the
# function's named like one of them must not stand in for it.
import sluice_runtime  # noqa: E402  (sets up logging and the init error hook)
import snapshot_restore_py  # noqa: F401,E402

import importlib  # noqa: E402
import logging  # noqa: E402

_UNHANDLED_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function "
    "code. However, in rare cases, a Lambda runtime update can cause unexpected function "
    "behavior. For functions using managed runtimes, runtime updates can be triggered by a "
    "function change, or can be applied automatically. To determine if the runtime has been "
    "updated, check the runtime version in the INIT_START log entry. If this error correlates "
    "with a change in the runtime version, you may be able to mitigate this error by "
    "temporarily rolling back to the previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)


class _Fault(Exception):
    def __init__(self, error_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


def _get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise _Fault("Runtime.MalformedHandlerName",
                     "Bad handler '{}': {}".format(handler, e)) from None
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise _Fault("Runtime.BuiltInModuleConflict",
                         "Cannot use built-in module {} as a handler module".format(modname))
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise _Fault("Runtime.ImportModuleError",
                     "Unable to import module '{}': {}".format(modname, e)) from None
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise _Fault("Runtime.UserCodeSyntaxError",
                     "Syntax error in module '{}': {}".format(modname, e), trace) from None
    try:
        return getattr(module, fname)
    except AttributeError:
        raise _Fault("Runtime.HandlerNotFound",
                     "Handler '{}' missing on module '{}'".format(fname, modname)) from None


def _init_failed(error_type, message, stack):
    logging.warning(_UNHANDLED_WARNING)
    sluice_runtime._log_error({"errorMessage": message, "errorType": error_type,
                               "requestId": "", "stackTrace": stack})
    sluice_runtime.init_error(error_type, message, stack)


def main():
    handler = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("_HANDLER", "")
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path[0] = task_root  # was this file's directory; PYTHONPATH keeps it
    try:
        fn = _get_handler(handler)
    except _Fault as e:
        _init_failed(e.error_type, e.msg, e.trace or [])
    except Exception as e:
        _init_failed(type(e).__name__, str(e), sluice_runtime._stack_of(e))
    if callable(fn):
        sluice_runtime.start(fn)
    # as in Lambda, a handler that is not callable fails each invocation
    sluice_runtime.start(lambda event, context: fn(event, context))


if __name__ == "__main__":
    main()
