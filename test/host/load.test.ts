/**
 * Load: 32 concurrent client processes, 10k ioctls each, through one daemon. Every call must get
 * exactly the result it gets alone (each client checks its own), the daemon must report no
 * internal error, and everything must be released at the end. Throughput is reported.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { compile, cleanupBuilds, haveCompiler, runClient, startDaemon, waitFor, type Daemon } from './helpers.js';

const skip = haveCompiler() ? false : 'no C compiler';
const CLIENTS = 32;
const CALLS = 10_000;

describe('load', { skip }, () => {
  let d: Daemon;
  let exe: string;
  before(async () => {
    exe = compile('hosttest');
    d = await startDaemon({ trace: undefined });
  });
  after(async () => {
    await d.close();
    cleanupBuilds();
  });

  test(`${CLIENTS} concurrent clients x ${CALLS} ioctls`, { timeout: 60_000 }, async (t) => {
    const start = process.hrtime.bigint();
    const results = await Promise.all(Array.from({ length: CLIENTS }, () => runClient(d, exe, ['load', String(CALLS)])));
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    let calls = 0;
    for (const r of results) {
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const m = /load ok calls=(\d+)/.exec(r.stdout);
      assert.ok(m, r.stdout);
      calls += Number(m[1]);
    }
    assert.ok(calls >= CLIENTS * CALLS);
    await waitFor(() => d.server.stats.open === 0, 'all released');
    assert.deepEqual(d.server.internalErrors, []);
    assert.equal(d.server.stats.rejected, 0);
    const line = `${calls} ioctls from ${CLIENTS} processes in ${seconds.toFixed(2)} s: ${Math.round(calls / seconds)} ioctls/s`;
    t.diagnostic(line);
    console.log(`# load: ${line}`);
  });
});
