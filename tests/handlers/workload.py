#!/usr/bin/python3
"""workload: ordinary work under the seccomp filter, for the sandbox tests
(docs/SECURITY.md, "Handlers: system calls"). The event names one action:

  python  what a Python handler does: threads, asyncio, an HTTP server and
          client on 127.0.0.1 (how the stock Lambda runtimes talk to their
          Runtime API), subprocesses, os.fork, TLS contexts, sqlite, mmap,
          signals, timers. Answers {check: "ok" or what failed}.
  run     runs event["argv"] (node, a Go program, ...) with event["env"]
          added to the environment; answers its exit status and output."""
import asyncio
import concurrent.futures
import hashlib
import http.server
import json
import mmap
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

import sluice_runtime


def c_threads():
    def burn(i):
        return hashlib.sha256(os.urandom(1024) * (i + 1)).hexdigest()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        assert len(set(ex.map(burn, range(32)))) == 32
    lock, cond, seen = threading.Lock(), threading.Condition(), []
    def waiter():
        with cond:
            cond.wait_for(lambda: seen, timeout=5)
    ts = [threading.Thread(target=waiter) for _ in range(4)]
    for t in ts:
        t.start()
    with lock, cond:
        seen.append(1)
        cond.notify_all()
    for t in ts:
        t.join(5)
        assert not t.is_alive()


def c_asyncio():
    async def main():
        async def serve(r, w):
            w.write(await r.readexactly(4))
            await w.drain()
            w.close()
        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping")
        got = await r.readexactly(4)
        w.close()
        srv.close()
        await srv.wait_closed()
        await asyncio.sleep(0.01)
        assert got == b"ping"
        out = await asyncio.create_subprocess_exec("/bin/echo", "hi",
                                                   stdout=asyncio.subprocess.PIPE)
        assert (await out.communicate())[0] == b"hi\n"
    asyncio.run(main())


def c_http():
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d/2018-06-01/runtime/invocation/next" % srv.server_port
        with urllib.request.urlopen(url, timeout=5) as r:
            assert json.load(r) == {"ok": True}
    finally:
        srv.shutdown()
        srv.server_close()


def c_subprocess():
    r = subprocess.run(["/bin/sh", "-c", "echo $((6*7))"], capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"42\n", r
    pid = os.fork()
    if pid == 0:
        os._exit(5)
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 5


def c_files():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "f")
        with open(p, "wb") as f:
            f.write(b"x" * 10000)
            f.flush()
            os.fsync(f.fileno())
        with open(p, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            m[0:1] = b"y"
        os.rename(p, p + "2")
        assert os.stat(p + "2").st_size == 10000
        os.mkfifo(os.path.join(d, "fifo"))
        db = sqlite3.connect(os.path.join(d, "db"))
        db.execute("create table t (x)")
        db.execute("insert into t values (1)")
        db.commit()
        assert db.execute("select count(*) from t").fetchone() == (1,)
        db.close()


def c_sockets():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close()
    b.close()
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError as e:
        if e.errno != 97:  # EAFNOSUPPORT: a kernel without IPv6, not the filter
            raise
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    assert socket.getaddrinfo("localhost", 80, socket.AF_INET)
    socket.gethostname()


def c_tls():
    ctx = ssl.create_default_context()
    assert ctx.cert_store_stats()["x509_ca"] > 0


def c_signals():
    got = []
    signal.signal(signal.SIGALRM, lambda s, f: got.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.01)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.005)
    assert got == [signal.SIGALRM]
    os.kill(os.getpid(), 0)


def c_misc():
    assert len(os.urandom(32)) == 32
    assert os.cpu_count() >= 1
    os.sched_getaffinity(0)
    os.uname()
    os.isatty(1)
    json.dumps({"t": time.time(), "m": time.monotonic()})


CHECKS = {
    "threads": c_threads,
    "asyncio": c_asyncio,
    "http_loopback": c_http,
    "subprocess_fork": c_subprocess,
    "files_mmap_sqlite": c_files,
    "sockets_getaddrinfo": c_sockets,
    "tls_context": c_tls,
    "signals_timers": c_signals,
    "misc": c_misc,
}


def python_work(event):
    out = {}
    for name, fn in CHECKS.items():
        try:
            fn()
            out[name] = "ok"
        except Exception as e:  # the test prints what failed
            out[name] = "%s: %s" % (type(e).__name__, e)
    return out


def run(event):
    env = dict(os.environ, **event.get("env", {}))
    try:
        r = subprocess.run(event["argv"], capture_output=True, timeout=60, env=env,
                           cwd=event.get("cwd", "/tmp"))
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"status": None, "output": "%s: %s" % (type(e).__name__, e)}
    return {"status": r.returncode,
            "output": (r.stdout + r.stderr).decode("utf-8", "replace")[-4000:]}


ACTIONS = {"python": python_work, "run": run}


def handler(event, context):
    action = event.get("action") if isinstance(event, dict) else None
    print("workload: %s" % action)
    if action not in ACTIONS:
        raise ValueError("unknown action %r" % (action,))
    return ACTIONS[action](event)


sluice_runtime.start(handler)
