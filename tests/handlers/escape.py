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
libc.inotify_init1.argtypes = [ctypes.c_int]


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


def ns_link(kind):
    try:
        return os.readlink("/proc/self/ns/" + kind)
    except OSError as e:
        return "error: %s" % e


def tmp_stat():
    try:
        st = os.stat("/tmp")
        return {"uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode & 0o7777}
    except OSError as e:
        return err(e)


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "error: %s" % e


HELD = []  # what an action keeps open for later invocations of the env


def abstract_listen(event):
    """Listen on an abstract unix socket; the env keeps it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind("\0" + event["name"])
        s.listen(4)
    except OSError as e:
        s.close()
        return err(e)
    HELD.append(s)
    return {"ok": True}


def abstract_connect(event):
    """Connect to an abstract unix socket; say whether /proc/net/unix lists it."""
    name = event["name"]
    listed = "@" + name in read_text("/proc/net/unix")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        return {"ok": True, "listed": listed}
    except OSError as e:
        return dict(err(e), listed=listed)
    finally:
        s.close()


def loopback(event):
    """A TCP connection over the env's own 127.0.0.1."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        c = socket.create_connection(ls.getsockname(), timeout=1)
        a, _ = ls.accept()
        c.sendall(b"ping")
        got = a.recv(4)
        a.close()
        c.close()
        return {"ok": got == b"ping", "port": ls.getsockname()[1]}
    except OSError as e:
        return err(e)
    finally:
        ls.close()


def inotify_exhaust(event):
    """Open inotify instances until the kernel refuses; the env keeps them."""
    n, error = 0, None
    for _ in range(int(event.get("max", 100000))):
        fd = libc.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            error = {"errno": e, "error": os.strerror(e)}
            break
        HELD.append(fd)
        n += 1
    return {"opened": n, "stopped_by": error}


def inotify_one(event):
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        return {"ok": False, "errno": e, "error": os.strerror(e)}
    os.close(fd)
    return {"ok": True}


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
        "tmp": tmp_stat(),
        "netns": ns_link("net"),
        "env": dict(os.environ),
    }


def init_view(event):
    """The fds this handler holds, and what its parent (the env's init) is."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass  # the fd listdir read the directory through, closed by now
    ppid = os.getppid()
    try:
        with open("/proc/%d/cmdline" % ppid, "rb") as f:
            cmdline = f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError as e:
        cmdline = "error: %s" % e
    try:
        init_fds = {"ok": True, "fds": os.listdir("/proc/%d/fd" % ppid)}
    except OSError as e:
        init_fds = err(e)
    return {"fds": fds, "ppid": ppid, "init_cmdline": cmdline, "init_fds": init_fds}


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
    "abstract_listen": abstract_listen,
    "abstract_connect": abstract_connect,
    "loopback": loopback,
    "inotify_exhaust": inotify_exhaust,
    "inotify_one": inotify_one,
    "init_view": init_view,
}


def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    print("escape: %s" % action)
    if action not in ACTIONS:
        raise ValueError("unknown action %r" % (action,))
    return ACTIONS[action](event)


sluice_runtime.start(handler)
