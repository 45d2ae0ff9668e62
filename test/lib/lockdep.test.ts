import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KERNEL_LOCK_ORDER, Lock, LockDep, LockOrderViolation, lockdep } from '../../src/lib/lockdep.js';

test('lockdep learns an order and rejects its inversion', () => {
  const dep = new LockDep();
  const a = new Lock('A', '', false, dep);
  const b = new Lock('B', '', false, dep);
  a.lock();
  b.lock();
  b.unlock();
  a.unlock();
  assert.deepEqual(dep.edges(), ['A -> B']);
  b.lock();
  assert.throws(() => a.lock(), LockOrderViolation);
  assert.equal(dep.violations.length, 1);
  assert.match(dep.violations[0]!, /inversion: taking A while holding B/);
});

test('lockdep sees an inversion through a chain', () => {
  const dep = new LockDep();
  const [a, b, c] = ['A', 'B', 'C'].map((n) => new Lock(n, '', false, dep)) as [Lock, Lock, Lock];
  a.lock(); b.lock(); b.unlock(); a.unlock();
  b.lock(); c.lock(); c.unlock(); b.unlock();
  c.lock();
  assert.throws(() => a.lock(), /C -> A|taking A while holding C/);
});

test('lockdep rejects recursion and unnested same-class locking', () => {
  const dep = new LockDep();
  const a1 = new Lock('A', 'one', false, dep);
  const a2 = new Lock('A', 'two', false, dep);
  a1.lock();
  assert.throws(() => a1.lock(), /recursive/);
  dep.strict = false;
  a2.lock();
  assert.match(dep.violations.at(-1)!, /without a nesting annotation/);
});

test('nestable classes may be held twice; releasing an unheld lock is reported', () => {
  const dep = new LockDep();
  const a1 = new Lock('A', 'one', true, dep);
  const a2 = new Lock('A', 'two', true, dep);
  a1.lock();
  a2.lock();
  a2.unlock();
  a1.unlock();
  assert.equal(dep.violations.length, 0);
  assert.ok(dep.idle());
  assert.throws(() => a1.unlock(), /not held/);
});

test('a seeded order is enforced before it is ever seen; seeds that close a cycle are refused', () => {
  const dep = new LockDep();
  dep.seed([
    ['A', 'B'],
    ['B', 'C'],
  ]);
  const [a, c] = ['A', 'C'].map((n) => new Lock(n, '', false, dep)) as [Lock, Lock];
  assert.deepEqual(dep.edges(), [], 'seeds are not learned edges');
  c.lock();
  assert.throws(() => a.lock(), /taking A while holding C, but A -> C is the kernel's order/);
  assert.throws(() => dep.seed([['C', 'A']]), /seeding C -> A closes a cycle/);
});

test('the process-wide checker is seeded with KERNEL_LOCK_ORDER: a reversal throws the first time', () => {
  for (const [outer, inner] of KERNEL_LOCK_ORDER) {
    const o = new Lock(outer, 'test');
    const i = new Lock(inner, 'test');
    i.lock();
    try {
      assert.throws(() => o.lock(), LockOrderViolation, `${inner} then ${outer}`);
    } finally {
      lockdep.resetHeld();
      lockdep.violations.length = 0;
    }
  }
  for (const e of ['igroup->lock -> group->mutex', 'fault->mutex -> fault->lock', 'mock_dev->iopf_rwsem -> igroup->lock'])
    assert.ok(KERNEL_LOCK_ORDER.some(([a, b]) => `${a} -> ${b}` === e), e);
});
