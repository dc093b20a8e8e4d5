"""sluice_runtime: the handler side of sluice's native protocol, for Python.

A handler script imports this module first, then calls start()::

    #!/usr/bin/python3
    import sluice_runtime          # first: failures from here on are reported

    import orders                  # may raise: sent as init_error

    def handler(event, context):
        return {"ok": True, "left_ms": context.get_remaining_time_in_millis()}

    sluice_runtime.start(handler)

The module speaks docs/PROTOCOL.md on fd 3: ``ready``, then one ``result``
per ``invoke``; it exits on ``shutdown`` and does the SnapStart
``snapshot``/``fork`` exchange, running the hooks registered with
register_before_snapshot() and register_after_restore().

Failures before ``ready``: an exception that escapes the script after this
module is imported is reported as ``init_error`` (ImportError as
Runtime.ImportModuleError, SyntaxError as Runtime.UserCodeSyntaxError,
anything else by its class name). A script may also report one itself with
init_error(type, message), e.g. around an optional import.

Needs msgpack (Debian's python3-msgpack); handlers run with /usr/bin/python3.
"""

import decimal
import fcntl
import json
import logging
import math
import os
import random
import signal
import socket
import struct
import sys
import time
import traceback

import msgpack

import snapshot_restore_py

__all__ = [
    "Context",
    "init_error",
    "register_after_restore",
    "register_before_snapshot",
    "start",
]

RUNTIME = "python/0.1"
FRAME_MAX = 6 * 1024 * 1024 + 64 * 1024  # frame body bytes, either way
PAYLOAD_MAX = 6 * 1024 * 1024            # event or result JSON bytes
_FDS_MAX = 8                             # descriptors kept between frames
_MESSAGE_MAX = 256 * 1024                # error_message characters sent
_STACK_MAX = 200                         # stack lines sent

_state = {"started": False, "ready": False, "request_id": None, "tenant_id": None}
_OWN_FILES = ("/sluice_runtime.py", "/sluice_bootstrap.py")


class ProtocolError(Exception):
    """sluice said something this runtime cannot read; the process ends."""


# --------------------------------------------------------------------------
# Context


class CognitoIdentity(object):
    """context.identity, as Lambda's: both attributes None unless the
    invocation came with a Cognito identity."""
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return ("%s([cognito_identity_id=%s,cognito_identity_pool_id=%s])"
                % (type(self).__name__, self.cognito_identity_id,
                   self.cognito_identity_pool_id))


class Client(object):
    """context.client_context.client (the mobile app that invoked)."""
    __slots__ = ["installation_id", "app_title", "app_version_name",
                 "app_version_code", "app_package_name"]

    def __repr__(self):
        return "%s([%s])" % (type(self).__name__, ",".join(
            "%s=%s" % (k, getattr(self, k)) for k in self.__slots__))


class ClientContext(object):
    """context.client_context: from the caller's X-Amz-Client-Context."""
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "%s([custom=%s,env=%s,client=%s])" % (
            type(self).__name__, self.custom, self.env, self.client)


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field) if isinstance(d, dict) else None)
    return obj


class _FaultException(Exception):
    """A failure of the runtime's own (Runtime.*), reported as Lambda's
    runtime reports it: its type, message and stack as given."""

    def __init__(self, error_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


def _parse_json_header(text, name):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except Exception as e:
        raise _FaultException("Runtime.LambdaContextUnmarshalError",
                              "Unable to parse %s JSON: %s" % (name, e)) from None


class Context(object):
    """The context object, as Lambda's Python runtime builds it
    (awslambdaric's LambdaContext): the same attributes with the same types
    (memory_limit_in_mb is a string), get_remaining_time_in_millis() and
    log()."""

    def __init__(self, msg):
        env = os.environ
        self.aws_request_id = msg["request_id"]
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = msg.get("function_name") or env.get("AWS_LAMBDA_FUNCTION_NAME")
        mem = msg.get("memory_mb")
        self.memory_limit_in_mb = (str(mem) if mem else
                                   env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
        self.function_version = (msg.get("function_version") or
                                 env.get("AWS_LAMBDA_FUNCTION_VERSION"))
        self.invoked_function_arn = msg.get("invoked_function_arn")
        self.tenant_id = msg.get("tenant_id")
        cc = msg.get("client_context")
        self.client_context = None
        if cc:
            self.client_context = _obj_from_dict(ClientContext,
                                                 _parse_json_header(cc, "Client Context"))
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        ci = msg.get("cognito_identity")
        if ci:
            ci = _parse_json_header(ci, "Cognito Identity")
            if isinstance(ci, dict):
                self.identity.cognito_identity_id = ci.get("cognitoIdentityId")
                self.identity.cognito_identity_pool_id = ci.get("cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = msg.get("deadline_ms") or 0

    def get_remaining_time_in_millis(self):
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return ("%s([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
                "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
                "invoked_function_arn=%s,client_context=%s,identity=%s,tenant_id=%s])"
                % (type(self).__name__, self.aws_request_id, self.log_group_name,
                   self.log_stream_name, self.function_name, self.memory_limit_in_mb,
                   self.function_version, self.invoked_function_arn, self.client_context,
                   self.identity, self.tenant_id))


# --------------------------------------------------------------------------
# Logging, as Lambda's Python runtime sets it up

_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_RESERVED_FIELDS = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
    "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
    "relativeCreated", "thread", "threadName", "processName", "process", "aws_request_id",
    "tenant_id", "_frame_type", "taskName",
}


def _log_format_json():
    return (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"


class JsonFormatter(logging.Formatter):
    """Lambda's JSON log line: timestamp, level, message, logger, requestId,
    the exception's fields when there is one, and the record's extras."""

    def __init__(self):
        logging.Formatter.__init__(self, datefmt=_DATETIME_FORMAT)

    def format(self, record):
        record.levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelname = logging.getLevelName(record.levelno)
        exc = record.exc_info
        result = {
            "timestamp": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc[2]) if exc else None,
            "errorType": exc[0].__name__ if exc else None,
            "errorMessage": str(exc[1]) if exc else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": ("%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
                         if exc else None),
        }
        if getattr(record, "tenant_id", None) is not None:
            result["tenantId"] = record.tenant_id
        result.update((k, v) for k, v in record.__dict__.items()
                      if k not in _RESERVED_FIELDS and k not in result)
        result = {k: v for k, v in result.items() if v is not None}
        return json.dumps(result, ensure_ascii=False, default=str) + "\n"


class LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _state["request_id"] or ""
        record.tenant_id = _state["tenant_id"]
        return True


class LambdaLoggerHandler(logging.Handler):
    """The root logger's handler: each record is written whole to stdout,
    which sluice logs line by line under the request id."""

    def emit(self, record):
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


def _setup_logging():
    if any(isinstance(h, LambdaLoggerHandler) for h in logging.getLogger().handlers):
        return
    logging.Formatter.converter = time.gmtime
    logger = logging.getLogger()
    handler = LambdaLoggerHandler()
    if _log_format_json():
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
            "%Y-%m-%dT%H:%M:%S"))
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    level = {None: "", "TRACE": "DEBUG"}.get(level, level).upper()
    if level in logging._nameToLevel:
        logger.setLevel(level)
    handler.addFilter(LambdaLoggerFilter())
    logger.addHandler(handler)


def _log_error(error):
    """What Lambda's runtime writes to the function's log when an
    invocation or the init fails (text: one line, \\r between lines)."""
    if _log_format_json():
        line = json.dumps(dict({"timestamp": time.strftime(_DATETIME_FORMAT, time.gmtime()),
                                "log_level": "ERROR"}, **error), ensure_ascii=False)
        sys.stdout.write(line + "\n")
        return
    desc = "[ERROR]"
    if error.get("errorType"):
        desc += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            desc += ":"
        desc += " " + error["errorMessage"]
    lines = [desc]
    if error.get("stackTrace") is not None:
        lines.append("Traceback (most recent call last):")
        for element in error["stackTrace"]:
            if element == "":
                lines.append("")
                continue
            for line in element.splitlines():
                n = len(line) - len(line.lstrip(" "))
                lines.append("\u00a0" * n + line[n:])
    sys.stdout.write("\r".join(lines) + "\n")


# --------------------------------------------------------------------------
# Frames


class _Channel:
    """The protocol socket. Reads go through recvmsg so that the descriptors
    attached to a ``fork`` frame are collected with whichever read first
    touches that frame; reads never go past the frame being read."""

    def __init__(self, fd):
        self.fd = fd
        self.sock = socket.socket(fileno=fd)  # ENOTSOCK/EBADF when it is not a socket
        self.fds = []

    def _read_exact(self, n, eof_ok):
        buf = bytearray()
        anc = socket.CMSG_SPACE(_FDS_MAX * 4)
        while len(buf) < n:
            try:
                data, ancdata, flags, _ = self.sock.recvmsg(
                    min(n - len(buf), 1 << 20), anc, socket.MSG_CMSG_CLOEXEC)
            except InterruptedError:
                continue
            except OSError as e:
                raise ProtocolError("cannot read from sluice: %s" % e.strerror) from None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(cdata) - len(cdata) % 4
                    self.fds.extend(struct.unpack("%di" % (usable // 4), cdata[:usable]))
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("control data from sluice was truncated")
            if len(self.fds) > _FDS_MAX:
                raise ProtocolError("sluice sent more than %d descriptors" % _FDS_MAX)
            if not data:
                if not buf and eof_ok:
                    return None
                raise ProtocolError("sluice closed the socket mid-frame (%d of %d bytes)"
                                    % (len(buf), n))
            buf += data
        return bytes(buf)

    def read(self):
        """One message (a dict with a str `type`), or None at end of stream."""
        hdr = self._read_exact(4, True)
        if hdr is None:
            return None
        (n,) = struct.unpack(">I", hdr)
        if n > FRAME_MAX:
            raise ProtocolError("frame of %d bytes from sluice is past the %d-byte cap"
                                % (n, FRAME_MAX))
        if n == 0:
            raise ProtocolError("empty frame from sluice")
        body = self._read_exact(n, False)
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several kinds: all mean garbage
            raise ProtocolError("frame from sluice is not valid msgpack: %s"
                                % (str(e) or type(e).__name__)) from None
        if not isinstance(msg, dict):
            raise ProtocolError("frame from sluice is not a map")
        if not isinstance(msg.get("type"), str):
            raise ProtocolError("message from sluice lacks a string `type`")
        return msg

    def write(self, msg, creds=False):
        """Send one message, whole. With `creds`, the first sendmsg carries
        SCM_CREDENTIALS so sluice learns the pid of a forked environment."""
        body = msgpack.packb(msg, use_bin_type=True)
        if len(body) > FRAME_MAX:
            raise ProtocolError("frame of %d bytes is past the %d-byte cap"
                                % (len(body), FRAME_MAX))
        view = memoryview(struct.pack(">I", len(body)) + body)
        anc = []
        if creds:
            anc = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                    struct.pack("iII", os.getpid(), os.getuid(), os.getgid()))]
        while view:
            try:
                n = self.sock.sendmsg([view], anc)
            except InterruptedError:
                continue
            except OSError as e:
                raise ProtocolError("cannot write to sluice: %s" % e.strerror) from None
            view = view[n:]
            anc = []

    def take_fds(self):
        fds, self.fds = self.fds, []
        return fds

    def take_over(self, sock_fd, out_fd, err_fd):
        """In a forked environment: move its socket and output pipes onto our
        fd, 1 and 2, dropping the template's. Takes ownership of all three."""
        # Park them above the targets first: one may sit on 1 or 2 when the
        # template had closed its own stdout or stderr.
        parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (sock_fd, out_fd, err_fd)]
        for fd in (sock_fd, out_fd, err_fd):
            os.close(fd)
        self.sock.detach()  # dup2 below closes the old socket; the object must not
        os.dup2(parked[0], self.fd, inheritable=False)
        os.dup2(parked[1], 1)
        os.dup2(parked[2], 2)
        for fd in parked:
            os.close(fd)
        self.sock = socket.socket(fileno=self.fd)


def _runtime_fd():
    try:
        return int(os.environ.get("SLUICE_RUNTIME_FD", "3"))
    except ValueError:
        return 3


def _die(msg):
    print("sluice_runtime: %s" % msg, file=sys.stderr, flush=True)
    sys.exit(1)


# --------------------------------------------------------------------------
# Errors


def _stack_of(exc, skip=0):
    """Lambda's `stackTrace`: one formatted string per frame (as
    traceback.format_list formats them), from the first frame that is not
    the runtime's own."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    frames = traceback.extract_tb(tb)
    for i, f in enumerate(frames):
        if not f.filename.endswith(_OWN_FILES):
            frames = frames[i:]
            break
    lines = traceback.format_list(frames)
    return lines[-_STACK_MAX:]


def _error_fields(error_type, message, stack):
    return {
        "error_type": str(error_type)[:256],
        "error_message": str(message)[:_MESSAGE_MAX],
        "stack": [str(s) for s in stack or []],
    }


def _init_error_type(exc):
    if isinstance(exc, SyntaxError):
        return "Runtime.UserCodeSyntaxError"
    if isinstance(exc, ImportError):
        return "Runtime.ImportModuleError"
    return type(exc).__name__


def _send_init_error(chan, error_type, message, stack=None):
    msg = {"type": "init_error"}
    msg.update(_error_fields(error_type, message, stack))
    chan.write(msg)


def init_error(error_type, message, stack=None):
    """Report a failed init to sluice (instead of ``ready``) and exit(1)."""
    print("init error: %s: %s" % (error_type, message), file=sys.stderr, flush=True)
    try:
        _send_init_error(_Channel(_runtime_fd()), error_type, message, stack)
    except (OSError, ProtocolError) as e:
        print("sluice_runtime: cannot report the init error: %s" % e, file=sys.stderr)
    sys.stdout.flush()
    os._exit(1)


def _excepthook(kind, exc, tb):
    """An exception that escapes the script before ``ready`` is an init
    error; after it, the process dies (Runtime.ExitError) as usual."""
    sys.__excepthook__(kind, exc, tb)
    if _state["ready"] or not issubclass(kind, Exception):
        return
    init_error(_init_error_type(exc), str(exc), _stack_of(exc))


# --------------------------------------------------------------------------
# Hooks


def register_before_snapshot(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in the template before its snapshot (close
    connections, stop threads: fork keeps only the calling thread); the
    last registered runs first, as in Lambda. An exception ends the template
    with init_error. Returns fn, so it works as a decorator. The same list
    as snapshot_restore_py's."""
    return snapshot_restore_py.register_before_snapshot(fn, *args, **kwargs)


def register_after_restore(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in each environment forked from the template,
    after the `random` module has been re-seeded, in registration order. An
    exception ends that environment with init_error. Returns fn, so it works
    as a decorator. The same list as snapshot_restore_py's."""
    return snapshot_restore_py.register_after_restore(fn, *args, **kwargs)


# --------------------------------------------------------------------------
# Messages


def _json_default(obj):
    # Lambda's marshaller writes a Decimal as its number (boto3's DynamoDB
    # values are Decimals); json cannot write raw text, so int or float
    if isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return math.nan
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _fail(res, error_type, message, stack):
    """Fill a failed result and write Lambda's error line to the log."""
    res["ok"] = False
    res.update(_error_fields(error_type, message, stack))
    _log_error({"errorMessage": res["error_message"], "errorType": res["error_type"],
                "requestId": res["request_id"], "stackTrace": res["stack"]})


def _on_invoke(chan, msg, handler):
    rid = msg.get("request_id")
    event = msg.get("event")
    if not isinstance(rid, str):
        raise ProtocolError("`invoke` from sluice lacks a string `request_id`")
    if not isinstance(event, (bytes, str)):
        raise ProtocolError("`invoke` from sluice lacks `event`")
    for key in ("deadline_ms", "memory_mb"):
        if not isinstance(msg.get(key, 0), (int, type(None))):
            raise ProtocolError("`%s` from sluice is not an integer" % key)
    for key in ("function_name", "function_version", "invoked_function_arn", "tenant_id"):
        if not isinstance(msg.get(key, ""), (str, type(None))):
            raise ProtocolError("`%s` from sluice is not a string" % key)
    for key in ("client_context", "cognito_identity"):
        if not isinstance(msg.get(key), (str, bytes, type(None))):
            raise ProtocolError("`%s` from sluice has the wrong type" % key)

    _state["request_id"] = rid
    _state["tenant_id"] = msg.get("tenant_id")
    res = {"type": "result", "request_id": rid}
    try:
        context = Context(msg)
        try:
            event = json.loads(event)
        except ValueError as e:
            raise _FaultException("Runtime.UnmarshalError",
                                  "Unable to unmarshal input: %s" % e) from None
        try:
            out = handler(event, context)
        except Exception as e:
            _fail(res, type(e).__name__, str(e), _stack_of(e, skip=1))
        else:
            try:
                payload = json.dumps(out, default=_json_default).encode("utf-8")
            except (TypeError, ValueError) as e:
                raise _FaultException("Runtime.MarshalError",
                                      "Unable to marshal response: %s" % e) from None
            if len(payload) > PAYLOAD_MAX:
                # Past the cap the frame itself would be illegal: say why here.
                raise _FaultException(
                    "Function.ResponseSizeTooLarge",
                    "Response payload size (%d bytes) exceeded maximum allowed payload "
                    "size (%d bytes)." % (len(payload), PAYLOAD_MAX))
            res["ok"] = True
            res["payload"] = payload
    except _FaultException as e:
        _fail(res, e.error_type, e.msg, e.trace or [])
    sys.stdout.flush()  # the handler's lines belong to this request id
    sys.stderr.flush()
    chan.write(res)


def _run_hooks(chan, hooks, error_type):
    for fn, args, kwargs in hooks:
        try:
            fn(*args, **kwargs)
        except Exception as e:
            traceback.print_exc()
            _send_init_error(chan, error_type, "%s: %s" % (type(e).__name__, e),
                             _stack_of(e, skip=1))
            return False
    return True


def _on_fork(chan, msg, chld):
    """Returns "child" in the new environment, "parent" in the template, or
    None when the child's after-restore hooks failed (init_error sent)."""
    env_id = msg.get("env_id")
    fds = chan.take_fds()
    if not isinstance(env_id, str):
        raise ProtocolError("`fork` from sluice lacks a string `env_id`")
    if len(fds) != 3:  # the new socket, stdout pipe and stderr pipe, in this order
        raise ProtocolError("`fork` from sluice came with %d descriptors, not 3" % len(fds))
    if chld[0] is None:
        # Forked environments are our children; let the kernel reap them so
        # dead ones never pile up as zombies in the template.
        chld[0] = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        # No message says "fork failed": dying tells sluice plainly, and
        # closes the new environment's socket as well.
        for fd in fds:
            os.close(fd)
        raise ProtocolError("cannot fork environment %s: %s" % (env_id, e.strerror)) from None
    if pid == 0:
        signal.signal(signal.SIGCHLD, chld[0])
        chld[0] = None
        chan.take_over(*fds)
        random.seed()
        os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        # a log stream of its own, as each restored Lambda environment has
        stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        if "]" in stream:
            os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = (
                stream[:stream.rindex("]") + 1] + os.urandom(16).hex())
        if not _run_hooks(chan, snapshot_restore_py.get_after_restore(),
                          "Runtime.AfterRestoreError"):
            return None
        chan.write({"type": "ready", "runtime": RUNTIME, "restored": True}, creds=True)
        return "child"
    for fd in fds:
        os.close(fd)
    chan.write({"type": "forked", "env_id": env_id, "pid": pid})
    return "parent"


def _serve(chan, handler):
    snapshotted = False
    chld = [None]  # the template's SIGCHLD disposition before SIG_IGN
    while True:
        msg = chan.read()
        if msg is None:
            return 0  # sluice went away between frames: nothing left to do
        kind = msg["type"]
        if chan.fds and kind != "fork":
            raise ProtocolError("sluice attached a descriptor to `%s`" % kind)
        if kind == "invoke":
            if snapshotted:
                raise ProtocolError("sluice sent `invoke` to a snapshotted template")
            _on_invoke(chan, msg, handler)
        elif kind == "shutdown":
            return 0
        elif kind == "snapshot":
            # last registered first, as Lambda runs them
            if not _run_hooks(chan, list(reversed(snapshot_restore_py.get_before_snapshot())),
                              "Runtime.BeforeSnapshotError"):
                return 1
            sys.stdout.flush()
            sys.stderr.flush()
            snapshotted = True
            chan.write({"type": "snapshot_ready"})
        elif kind == "fork":
            side = _on_fork(chan, msg, chld)
            if side is None:
                return 1
            if side == "child":
                snapshotted = False  # an ordinary environment from here on
        else:
            # A newer sluice may say more; what we do not know we skip.
            print("sluice_runtime: ignoring message `%s`" % kind, file=sys.stderr)


def start(handler):
    """Serve invocations with handler(event, context) until sluice says
    ``shutdown``; then exit. The return value is sent JSON-encoded (None
    as null); an exception fails the invocation with its class name,
    message and traceback. Never returns."""
    if _state["started"]:
        raise RuntimeError("sluice_runtime.start() called twice")
    _state["started"] = True
    try:
        if not callable(handler):
            raise TypeError("handler %r is not callable" % (handler,))
        fd = _runtime_fd()
        try:
            chan = _Channel(fd)
        except OSError as e:
            _die("fd %d is not sluice's socket (%s); run this handler under sluice"
                 % (fd, e.strerror))
        if chan.sock.family != socket.AF_UNIX or chan.sock.type != socket.SOCK_STREAM:
            _die("fd %d is not sluice's socket; run this handler under sluice" % fd)
        os.set_inheritable(fd, False)  # processes the handler spawns must not hold it
    except Exception as e:
        init_error("Runtime.InitError", str(e), _stack_of(e))
    try:
        chan.write({"type": "ready", "runtime": RUNTIME})
        _state["ready"] = True
        code = _serve(chan, handler)
    except ProtocolError as e:
        _die(str(e))
    sys.exit(code)  # atexit handlers and finally blocks run


# Prints show up line by line in sluice's log, tagged with the request id
# of the invocation that was running when the line was written.
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
sys.excepthook = _excepthook
# logging.info() and friends as in Lambda: the root logger writes
# "[LEVEL]\t<time>\t<request id>\t<message>", or JSON lines
_setup_logging()
