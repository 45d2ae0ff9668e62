/**
 * SharedObjects: copies into a client's shared memory through a mapping of the object in the
 * daemon (instead of /proc/<pid>/mem), bounds-checked and safe against a truncated file.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import { after, describe, test } from 'node:test';
import { parseMaps } from '../../src/host/host-memory.js';
import { nativeHelper } from '../../src/host/native.js';
import { SharedObjects } from '../../src/host/shared-objects.js';
import { cleanupBuilds, compile, haveCompiler } from './helpers.js';

const canMap = (() => {
  const h = nativeHelper();
  return haveCompiler() && h?.objMap !== undefined;
})();
const skip = canMap ? false : 'needs the native helper and a C compiler';

/** A running sharedmem client and a line reader on its stdout. */
async function client(kind: 'anon' | 'memfd'): Promise<{ p: ChildProcessWithoutNullStreams; start: bigint; end: bigint; ask(cmd: string): Promise<string> }> {
  const p = spawn(compile('sharedmem'), [kind]);
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  let buf = '';
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  const next = (): Promise<string> => (lines.length ? Promise.resolve(lines.shift()!) : new Promise((r) => waiters.push(r)));
  const [s, e] = (await next()).split(' ');
  return {
    p,
    start: BigInt('0x' + s),
    end: BigInt('0x' + e),
    ask: (cmd) => {
      p.stdin.write(cmd + '\n');
      return next();
    },
  };
}

function vmaOf(pid: number, start: bigint) {
  const v = parseMaps(fs.readFileSync(`/proc/${pid}/maps`, 'latin1')).find((m) => m.start === start);
  assert.ok(v, 'the mapping is in /proc/<pid>/maps');
  return v;
}

describe('SharedObjects', { skip }, () => {
  after(() => cleanupBuilds());

  test('mapThrough maps an object through an fd of it the caller holds (a pinned page\'s backing), once', async () => {
    const c = await client('memfd');
    try {
      const v = vmaOf(c.p.pid!, c.start);
      const key = `${v.dev}:${v.inode}`; // "00:01:1234": the device has a colon of its own
      let fd = -1;
      try {
        fd = fs.openSync(`/proc/${c.p.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`, fs.constants.O_RDWR);
      } catch {
        fd = fs.openSync(`/proc/${c.p.pid}/fd/3`, fs.constants.O_RDWR); // the client's memfd
      }
      const so = new SharedObjects();
      assert.ok(so.mapThrough(key, v.inode, fd, true));
      assert.equal(so.count, 1);
      fs.closeSync(fd); // the mapping holds its own reference
      const b = Uint8Array.of(0x5a);
      assert.ok(so.ioMapped(key, Number(v.offset), b, true));
      assert.equal((await c.ask('dump')).split(' ')[0], '5a', 'the client sees the write');
      assert.ok(so.mapThrough(key, v.inode, -1, true), 'mapped already: the fd is not even looked at');
      assert.equal(so.mapsMade, 1);
      // Another object's fd under this key: refused (the inode differs), and remembered as such.
      const other = fs.openSync('/proc/self/exe', 'r');
      assert.equal(so.mapThrough('00:00:1', '1', other, false), false);
      assert.equal(so.mapThrough('00:00:1', '1', other, false), false);
      fs.closeSync(other);
      // Through a read-only fd, the mapping is read-only: a write there is not made here.
      const so2 = new SharedObjects();
      const ro = fs.openSync(`/proc/${c.p.pid}/fd/3`, fs.constants.O_RDONLY);
      assert.ok(so2.mapThrough(key, v.inode, ro, false));
      fs.closeSync(ro);
      assert.equal(so2.ioMapped(key, 0, Uint8Array.of(1), true), false);
      const r = new Uint8Array(1);
      assert.ok(so2.ioMapped(key, 0, r, false));
      assert.equal(r[0], 0x5a);
      so2.dropAll();
      so.dropAll();
      assert.equal(so.count, 0);
    } finally {
      c.p.kill();
    }
  });

  test('copies in and out of a MAP_SHARED anonymous buffer; dropAll unmaps', async (t) => {
    const c = await client('anon');
    try {
      const v = vmaOf(c.p.pid!, c.start);
      const so = new SharedObjects();
      const got = new Uint8Array(4);
      const ok = so.io(c.p.pid!, v, c.start + 4094n, got, false);
      if (!ok) return t.skip('/proc/<pid>/map_files cannot be opened here (no CAP_SYS_ADMIN)');
      assert.deepEqual([...got], [0x11, 0x11, 0x11, 0x11]);
      assert.equal(so.count, 1);
      assert.ok(so.io(c.p.pid!, v, c.start, Uint8Array.of(0xab), true));
      assert.ok(so.io(c.p.pid!, v, c.start + 4096n, Uint8Array.of(0xcd), true));
      assert.equal(await c.ask('dump'), 'ab cd', 'the client sees the writes');
      // By object and offset (a frame's content): the same bytes, once mapped; nothing otherwise.
      const byObj = new Uint8Array(1);
      assert.ok(so.ioMapped(`${v.dev}:${v.inode}`, Number(v.offset) + 4096, byObj, false));
      assert.equal(byObj[0], 0xcd);
      assert.equal(new SharedObjects().ioMapped(`${v.dev}:${v.inode}`, 0, byObj, false), false, 'not mapped there');
      assert.equal(so.io(c.p.pid!, v, c.end - 2n, new Uint8Array(4), false), false, 'past the object: not here');
      so.dropAll();
      assert.equal(so.count, 0);
    } finally {
      c.p.kill();
    }
  });

  test('a memfd truncated behind the daemon\'s back: the copy fails (SIGBUS caught), the daemon lives', async (t) => {
    const c = await client('memfd');
    try {
      const v = vmaOf(c.p.pid!, c.start);
      const so = new SharedObjects();
      if (!so.io(c.p.pid!, v, c.start + 4096n, new Uint8Array(8), false)) return t.skip('/proc/<pid>/map_files cannot be opened here');
      assert.equal(await c.ask('truncate'), 'truncated');
      assert.equal(so.io(c.p.pid!, v, c.start + 4096n, new Uint8Array(8), false), false, 'the page is gone: a failed copy');
      assert.equal(so.io(c.p.pid!, v, c.start + 4096n, Uint8Array.of(1), true), false);
      const first = new Uint8Array(1);
      assert.ok(so.io(c.p.pid!, v, c.start, first, false), 'the first page is still there');
      assert.equal(first[0], 0x11);
      so.dropAll();
    } finally {
      c.p.kill();
    }
  });

  test('disabled (IOMMUFD_TS_MAP_SHARED=0): never maps', async () => {
    const c = await client('anon');
    try {
      const so = new SharedObjects(false);
      assert.equal(so.io(c.p.pid!, vmaOf(c.p.pid!, c.start), c.start, new Uint8Array(4), false), false);
      assert.equal(so.count, 0);
    } finally {
      c.p.kill();
    }
  });
});
