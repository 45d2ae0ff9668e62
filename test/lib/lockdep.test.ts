import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Lock, LockDep, LockOrderViolation } from '../../src/lib/lockdep.js';

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
