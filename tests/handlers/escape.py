#!/usr/bin/python3
"""escape: tries what a hostile handler would try, for the sandbox tests.

The event names one action ({"action": "..."}). Each reports what happened
in its result rather than crashing, except the actions whose point is to
crash or hang (alloc, garbage, exit, sleep_with_children, big_result).
Never run the fork_bomb, alloc, mount or ptrace actions outside a sandbox."""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

import sluice_runtime

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
PTRACE_TRACEME = 0

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_void_p]
libc.unshare.argtypes = [ctypes.c_int]


def err(e):
    return {"ok": False, "errno": e.errno, "error": "%s: %s" % (type(e).__name__, e)}


def try_write(path):
    try:
        with open(path, "w") as f:
            f.write("escaped\n")
        return {"ok": True}
    except OSError as e:
        return err(e)


def write_outside(event):
    return {p: try_write(p)
            for p in ("/etc/sluice-escape", "/var/task/x", "/tmp/sluice-escape-control")}


def read_host(event):
    path = event["path"]
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
        return {"path": path, "ok": True, "data": data[:512].decode("utf-8", "replace")}
    except OSError as e:
        return dict(err(e), path=path)


def connect(event):
    port = int(event["port"])
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.close()
        return {"port": port, "ok": True}
    except OSError as e:
        return dict(err(e), port=port)


def fork_bomb(event):
    limit = int(event.get("max", 10000))
    pids, error = [], None
    for _ in range(limit):
        try:
            pid = os.fork()
        except OSError as e:
            error = err(e)
            break
        if pid == 0:
            # Child: hold the pid slot, touch nothing, never return into the runtime.
            try:
                time.sleep(60)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    return {"forked": len(pids), "limit": limit, "stopped_by": error}


def alloc(event):
    n = int(event["mb"]) * 1024 * 1024
    b = bytearray(n)
    for i in range(0, n, 4096):  # touch every page so it is really resident
        b[i] = 1
    return {"allocated_mb": int(event["mb"])}


def libc_result(ret):
    e = ctypes.get_errno() if ret == -1 else 0
    return {"ret": ret, "errno": e, "error": os.strerror(e) if e else None}


def do_ptrace(event):
    return libc_result(libc.ptrace(PTRACE_TRACEME, 0, None, None))


def do_mount(event):
    try:
        os.makedirs("/tmp/x", exist_ok=True)
    except OSError:
        pass
    return libc_result(libc.mount(b"none", b"/tmp/x", b"tmpfs", 0, None))


def do_unshare(event):
    return libc_result(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))


def sleep_with_children(event):
    kids = [subprocess.Popen(["sleep", "1000"]) for _ in range(3)]
    print("children: %s" % " ".join(str(k.pid) for k in kids))
    time.sleep(int(event.get("sleep_ms", 60000)) / 1000)
    return {"children": [k.pid for k in kids]}


def big_result(event):
    return "x" * (int(event["mb"]) * 1024 * 1024)


def garbage(event):
    os.write(3, os.urandom(int(event.get("bytes", 4096))))
    time.sleep(5)
    return {"wrote_garbage": True}


def do_exit(event):
    sys.stdout.flush()
    os._exit(int(event.get("code", 3)))


def status_line(name):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError as e:
        return "error: %s" % e
    return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "error: %s" % e


def whoami(event):
    try:
        root = sorted(os.listdir("/"))
    except OSError as e:
        root = "error: %s" % e
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "hostname": socket.gethostname(),
        "root": root,
        "cap_eff": status_line("CapEff"),
        "cap_bnd": status_line("CapBnd"),
        "no_new_privs": status_line("NoNewPrivs"),
        "seccomp": status_line("Seccomp"),
        "cgroup": read_text("/proc/self/cgroup").strip(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }


ACTIONS = {
    "write_outside": write_outside,
    "read_host": read_host,
    "connect": connect,
    "fork_bomb": fork_bomb,
    "alloc": alloc,
    "ptrace": do_ptrace,
    "mount": do_mount,
    "unshare": do_unshare,
    "sleep_with_children": sleep_with_children,
    "big_result": big_result,
    "garbage": garbage,
    "exit": do_exit,
    "whoami": whoami,
}


def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    print("escape: %s" % action)
    if action not in ACTIONS:
        raise ValueError("unknown action %r" % (action,))
    return ACTIONS[action](event)


sluice_runtime.start(handler)
