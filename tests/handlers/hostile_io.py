#!/usr/bin/python3
"""hostile_io: what a hostile handler does with its terminal, its output and
its files, for the hardening tests (docs/SECURITY.md, "Handlers: terminal,
output and files"). The event names one action ({"action": "..."}):

  tty      look for a terminal: /dev/tty, a controlling terminal, the
           env init's fds, and try TIOCSTI/TIOCLINUX on every fd found
  flood    write to stdout without end (never answers)
  escapes  print lines with terminal escapes and forged log lines
  write    try to write event["path"]
  read     read event["path"]"""
import ctypes
import errno
import os

import sluice_runtime

TIOCSTI = 0x5412
TIOCLINUX = 0x541C

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p]
libc.ioctl.restype = ctypes.c_int


def try_ioctl(fd, cmd):
    # TIOCLINUX's argument is a subcommand byte; 0 is a harmless one
    arg = b" " if (cmd & 0xffffffff) == TIOCSTI else b"\x00"
    ret = libc.ioctl(fd, cmd, arg)
    e = ctypes.get_errno() if ret == -1 else 0
    return {"fd": fd, "cmd": hex(cmd), "ret": ret, "errno": e}


def tty(event):
    out = {"opened": {}, "attempts": []}
    fds = [0, 1, 2, 3]
    # the controlling terminal, and whatever terminal the env's init holds
    paths = ["/dev/tty"] + ["/proc/1/fd/%d" % i for i in range(0, 8)]
    for p in paths:
        try:
            fd = os.open(p, os.O_RDWR | os.O_NOCTTY)
        except OSError as e:
            out["opened"][p] = {"ok": False, "errno": e.errno}
            continue
        out["opened"][p] = {"ok": True, "isatty": os.isatty(fd)}
        fds.append(fd)
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["tty_nr"] = int(fields[4])  # field 7: the controlling terminal
    out["sid_is_init"] = os.getsid(0) == 1
    for fd in fds:
        # high bits set: the kernel truncates the command to 32 bits
        for cmd in (TIOCSTI, TIOCLINUX, TIOCSTI | (1 << 32)):
            out["attempts"].append(try_ioctl(fd, cmd))
    return out


def flood(event):
    # short lines: the most work per byte for whoever logs them
    chunk = b"x\n" * 32768
    while True:
        os.write(1, chunk)


def escapes(event):
    print("title \x1b]0;pwned\x07 red \x1b[31mRED\x1b[0m bell \x07 del \x7f c1 \x9b2J end")
    print("innocent\r2024-01-01T00:00:00.000Z error [sluice] forged line", flush=True)
    os.write(1, b"raw \xff\xfe bytes\n")
    return {"printed": 3}


def write(event):
    try:
        with open(event["path"], "w") as f:
            f.write("written\n")
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": str(e)}


def read(event):
    try:
        with open(event["path"]) as f:
            return {"ok": True, "data": f.read(4096)}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": str(e)}


ACTIONS = {"tty": tty, "flood": flood, "escapes": escapes, "write": write, "read": read}


def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    if action not in ACTIONS:
        raise ValueError("unknown action %r" % (action,))
    return ACTIONS[action](event)


sluice_runtime.start(handler)
