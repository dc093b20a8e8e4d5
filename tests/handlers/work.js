// work.js: what a Node.js handler does, run under the seccomp filter by the
// sandbox tests (docs/SECURITY.md, "Handlers: system calls"): an HTTP server
// and client on 127.0.0.1 (how the Runtime Interface Client talks to the
// Lambda Runtime API), files in /tmp, a worker thread, crypto, a child
// process, timers, DNS for localhost. Prints one JSON object, exits 0 when
// every check passed.
'use strict';
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const dns = require('dns');
const { execFileSync } = require('child_process');
const { Worker } = require('worker_threads');

const results = {};

async function check(name, fn) {
  try {
    await fn();
    results[name] = 'ok';
  } catch (e) {
    results[name] = String(e && e.stack || e);
  }
}

function httpRoundTrip() {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      res.setHeader('Lambda-Runtime-Aws-Request-Id', 'r-1');
      res.end(JSON.stringify({ path: req.url }));
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = srv.address().port;
      http.get({ host: '127.0.0.1', port, path: '/2018-06-01/runtime/invocation/next' }, (res) => {
        let body = '';
        res.on('data', (c) => { body += c; });
        res.on('end', () => {
          srv.close();
          try {
            if (JSON.parse(body).path !== '/2018-06-01/runtime/invocation/next') throw new Error(body);
            resolve();
          } catch (e) { reject(e); }
        });
      }).on('error', reject);
    });
  });
}

function worker() {
  return new Promise((resolve, reject) => {
    const w = new Worker('const { parentPort } = require("worker_threads");' +
                         'parentPort.postMessage(require("crypto").createHash("sha256").update("x").digest("hex"));',
                         { eval: true });
    w.on('message', (m) => { if (m.length === 64) resolve(); else reject(new Error(m)); });
    w.on('error', reject);
  });
}

(async () => {
  await check('http_loopback', httpRoundTrip);
  await check('files', async () => {
    const d = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'node-'));
    const f = path.join(d, 'f');
    await fs.promises.writeFile(f, 'x'.repeat(100000));
    const st = await fs.promises.stat(f);
    if (st.size !== 100000) throw new Error('size ' + st.size);
    await fs.promises.rename(f, f + '2');
    await fs.promises.rm(d, { recursive: true });
  });
  await check('worker_thread', worker);
  await check('crypto', async () => {
    crypto.randomBytes(32);
    crypto.createHash('sha256').update('x').digest();
    await new Promise((res, rej) => crypto.pbkdf2('a', 'b', 1000, 32, 'sha256', (e) => e ? rej(e) : res()));
  });
  await check('child_process', async () => {
    const out = execFileSync('/bin/sh', ['-c', 'echo hi']).toString();
    if (out !== 'hi\n') throw new Error(out);
  });
  await check('timers', () => new Promise((res) => setTimeout(res, 5)));
  // AI_ADDRCONFIG: glibc asks netlink which families have addresses, and
  // takes its fallback when the socket is refused
  await check('dns_localhost', () => new Promise((res, rej) =>
    dns.lookup('localhost', { hints: dns.ADDRCONFIG }, (e) => e ? rej(e) : res())));
  await check('os', async () => { os.cpus(); os.totalmem(); os.hostname(); os.uptime(); });
  console.log(JSON.stringify(results));
  process.exit(Object.values(results).every((v) => v === 'ok') ? 0 : 1);
})();
