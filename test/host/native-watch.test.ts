/**
 * The native helper's socket watch (watch/watchReady/unwatch): the daemon asks it before answering
 * a channel request at once, so it must say "quiet" exactly when poll() over the same sockets
 * would: no input and no hangup on any of them.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { nativeHelper } from '../../src/host/native.js';

const fdOf = (h: net.Socket | net.Server): number => (h as unknown as { _handle: { fd: number } })._handle.fd;
const tick = () => new Promise((r) => setTimeout(r, 20));

describe('native socket watch', () => {
  test('quiet, then input and a hangup each make it not quiet, as poll() says', async (t) => {
    const h = nativeHelper();
    if (!h?.watch || !h.watchReady || !h.unwatch || !h.ready) return t.skip('the native helper is not built');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-watch-'));
    const accepted: net.Socket[] = [];
    // Connections that do not read: their input stays in the kernel, as the daemon's check sees it between rounds.
    const server = net.createServer({ pauseOnConnect: true }, (s) => accepted.push(s));
    try {
      const sock = path.join(dir, 's');
      await new Promise<void>((r) => server.listen(sock, () => r()));
      const client = net.connect(sock);
      await new Promise<void>((r) => client.on('connect', () => r()));
      while (accepted.length < 1) await tick();
      const check = async (conn: net.Socket, act: () => void, what: string) => {
        const fds = Int32Array.from([fdOf(conn), fdOf(server)]);
        const ep = h.watch!(fds);
        assert.ok(ep >= 0, `watch: ${ep}`);
        const both = () => [h.watchReady!(ep) > 0, h.ready!(fds) > 0];
        assert.deepEqual(both(), [false, false], `quiet before ${what}`);
        act();
        await tick();
        assert.deepEqual(both(), [true, true], `${what} is pending`);
        assert.equal(h.unwatch!(ep), 0);
        assert.ok(h.watchReady!(ep) < 0, 'a closed watch is an error, not quiet');
      };
      await check(accepted[0]!, () => client.write('x'), 'input');
      const client2 = net.connect(sock);
      await new Promise<void>((r) => client2.on('connect', () => r()));
      while (accepted.length < 2) await tick();
      await check(accepted[1]!, () => client2.end(), 'a hangup');
      client.destroy();
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a watch over an fd that is not open is refused (the daemon then polls)', (t) => {
    const h = nativeHelper();
    if (!h?.watch) return t.skip('the native helper is not built');
    assert.ok(h.watch(Int32Array.from([999999])) < 0);
  });
});
