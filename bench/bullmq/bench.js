// BullMQ side of `bench/run bullmq`: N no-op jobs through one Worker,
// with BullMQ's documented fast path: Queue.addBulk (one round trip per
// chunk), a Worker with high concurrency, removeOnComplete so finished
// jobs are not kept, and no per-job events listened to.
//
//   node bench.js PORT N CONCURRENCY
//
// Prints one line: "bullmq <jobs/s> <ms>" (time from the worker's start
// until the last job completed; adding the jobs is not timed).
'use strict';
const { Queue, Worker } = require('bullmq');

async function main() {
  const [port, n, concurrency] = process.argv.slice(2).map(Number);
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const queue = new Queue('bench', { connection });
  const chunk = 1000;
  for (let i = 0; i < n; i += chunk) {
    const jobs = [];
    for (let k = i; k < Math.min(n, i + chunk); k++)
      jobs.push({ name: 'noop', data: { n: k },
                  opts: { removeOnComplete: true, removeOnFail: true } });
    await queue.addBulk(jobs);
  }
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const t0 = process.hrtime.bigint();
  const worker = new Worker('bench', async () => {
    if (++done === n) finish();
  }, { connection, concurrency, autorun: true });
  await finished;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await worker.close();
  await queue.close();
  console.log(`bullmq ${(n / (ms / 1000)).toFixed(0)} ${ms.toFixed(0)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
