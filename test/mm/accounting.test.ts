import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccountMode, chargePinned, memlockLimitPages, unchargePinned, RLIM_INFINITY, SimMachine } from '../../src/mm/index.js';
import { throwsErrno } from './helpers.js';

test('AccountMode values match IOPT_PAGES_ACCOUNT_*', () => {
  assert.deepEqual(AccountMode, { NONE: 0, USER: 1, MM: 2 });
});

test('NONE: never limited, pinned_vm moves', () => {
  const m = new SimMachine();
  const p = m.spawn({ rlimitMemlock: 0n });
  chargePinned(p, AccountMode.NONE, 1_000_000);
  assert.equal(p.user.lockedVm, 0);
  assert.equal(p.mm.lockedVm, 0);
  assert.equal(p.mm.pinnedVm, 1_000_000);
  unchargePinned(p, AccountMode.NONE, 1_000_000);
  assert.equal(p.mm.pinnedVm, 0);
});

test('USER: charged to the uid, limit exactly reachable, one more page is ENOMEM', () => {
  const m = new SimMachine();
  const p = m.spawn({ uid: 1000 }); // 8 MiB = 2048 pages
  assert.equal(memlockLimitPages(p), 2048);
  chargePinned(p, AccountMode.USER, 2048);
  assert.equal(p.user.lockedVm, 2048);
  assert.equal(p.mm.pinnedVm, 2048);
  assert.equal(p.mm.lockedVm, 0);
  const e = throwsErrno(() => chargePinned(p, AccountMode.USER, 1), 'ENOMEM');
  assert.match(e.explanation, /uid 1000's locked_vm to 2049 pages, above RLIMIT_MEMLOCK 2048 pages/);
  assert.equal(p.user.lockedVm, 2048, 'nothing charged on failure');
  assert.equal(p.mm.pinnedVm, 2048);
  unchargePinned(p, AccountMode.USER, 16);
  assert.equal(p.user.lockedVm, 2032);
  assert.equal(p.mm.pinnedVm, 2032);
  chargePinned(p, AccountMode.USER, 16);
  const e2 = throwsErrno(() => chargePinned(p, AccountMode.USER, 16), 'ENOMEM');
  assert.match(e2.explanation, /charging 16 pages would raise uid 1000's locked_vm to 2064 pages, above RLIMIT_MEMLOCK 2048 pages/);
});

test('USER: the uid counter is shared by processes; the limit is the mapping task\'s', () => {
  const m = new SimMachine();
  const p = m.spawn({ uid: 1000 });
  const q = m.spawn({ uid: 1000, rlimitMemlock: 4096n * 3000n });
  chargePinned(p, AccountMode.USER, 2000);
  throwsErrno(() => chargePinned(p, AccountMode.USER, 100), 'ENOMEM');
  chargePinned(q, AccountMode.USER, 1000); // q's own limit is higher
  assert.equal(p.user.lockedVm, 3000);
  assert.equal(p.mm.pinnedVm, 2000);
  assert.equal(q.mm.pinnedVm, 1000);
  throwsErrno(() => chargePinned(q, AccountMode.USER, 1), 'ENOMEM');
  // Another uid has its own counter.
  const r = m.spawn({ uid: 1001 });
  chargePinned(r, AccountMode.USER, 2048);
  assert.equal(r.user.lockedVm, 2048);
});

test('USER: RLIM_INFINITY and a limit read at charge time', () => {
  const m = new SimMachine();
  const p = m.spawn({ rlimitMemlock: RLIM_INFINITY });
  chargePinned(p, AccountMode.USER, 2 ** 40);
  assert.equal(p.user.lockedVm, 2 ** 40);
  unchargePinned(p, AccountMode.USER, 2 ** 40);
  p.setRlimitMemlock(4096n * 10n);
  chargePinned(p, AccountMode.USER, 10);
  throwsErrno(() => chargePinned(p, AccountMode.USER, 1), 'ENOMEM');
  p.setRlimitMemlock(0n);
  throwsErrno(() => chargePinned(m.spawn({ rlimitMemlock: 0n }), AccountMode.USER, 1), 'ENOMEM');
});

test('MM: charged to mm->locked_vm; no CAP_IPC_LOCK bypass; boundary', () => {
  const m = new SimMachine();
  const p = m.spawn({ capabilities: ['CAP_IPC_LOCK'], rlimitMemlock: 4096n * 100n });
  chargePinned(p, AccountMode.MM, 100);
  assert.equal(p.mm.lockedVm, 100);
  assert.equal(p.user.lockedVm, 0);
  assert.equal(p.mm.pinnedVm, 100);
  const e = throwsErrno(() => chargePinned(p, AccountMode.MM, 1), 'ENOMEM');
  assert.match(e.explanation, /mm \d+'s locked_vm .* to 101 pages, above RLIMIT_MEMLOCK 100 pages/);
  assert.equal(p.mm.lockedVm, 100);
  unchargePinned(p, AccountMode.MM, 100);
  assert.equal(p.mm.lockedVm, 0);
  assert.equal(p.mm.pinnedVm, 0);
});

test('MM: the child mm starts at zero; a dead mm is EINVAL to charge and not uncharged', () => {
  const m = new SimMachine();
  const p = m.spawn();
  chargePinned(p, AccountMode.MM, 10);
  const c = p.fork();
  assert.equal(c.mm.lockedVm, 0);
  assert.equal(c.mm.pinnedVm, 0);
  p.exit();
  throwsErrno(() => chargePinned(p, AccountMode.MM, 1), 'EINVAL', /gone/);
  assert.equal(unchargePinned(p, AccountMode.MM, 10), false);
  assert.equal(p.mm.lockedVm, 10);
  assert.equal(p.mm.pinnedVm, 10);
  // USER accounting does not need the mm.
  const q = m.spawn();
  chargePinned(q, AccountMode.USER, 5);
  q.exit();
  assert.equal(unchargePinned(q, AccountMode.USER, 5), true);
  assert.equal(q.user.lockedVm, 0);
  assert.equal(q.mm.pinnedVm, 0);
});

test('uncharging more than charged is a bug', () => {
  const m = new SimMachine();
  const p = m.spawn();
  assert.throws(() => unchargePinned(p, AccountMode.USER, 1), /underflow/);
  assert.throws(() => unchargePinned(p, AccountMode.MM, 1), /underflow/);
  assert.throws(() => chargePinned(p, AccountMode.USER, -1), RangeError);
});
