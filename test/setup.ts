/**
 * Loaded into every test process (npm test passes --import): after each test, no JavaScript
 * exception may have escaped an ioctl, the lock checker must have seen no violation and no lock
 * left held, and no kernel WARN (src/lib/warn.ts) may be left undrained. Tests that provoke lock
 * violations on purpose use their own LockDep instance; tests that provoke WARNs drain the list.
 */
import assert from 'node:assert/strict';
import { afterEach } from 'node:test';
import { internalErrors } from '../src/iommufd/main.js';
import { lockdep } from '../src/lib/lockdep.js';
import { kernelWarnings } from '../src/lib/warn.js';

afterEach(() => {
  const internal = internalErrors.splice(0).map(String);
  const violations = lockdep.violations.splice(0);
  const warnings = kernelWarnings.splice(0);
  const held = lockdep.heldNames();
  if (held.length) lockdep.resetHeld();
  lockdep.violations.length = 0;
  assert.deepEqual(internal, [], 'JavaScript exceptions escaped an ioctl');
  assert.deepEqual(violations, [], 'lock checker violations');
  assert.deepEqual(held, [], 'locks still held at the end of the test');
  assert.deepEqual(warnings, [], 'kernel WARNs the test did not expect (and drain)');
});
