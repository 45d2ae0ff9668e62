/** IommuError: errno and explanation always; a JavaScript stack only while stacks are on. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/lib/errno.js';
import { IommuError, fail, setErrorStacks } from '../../src/lib/error.js';

function thrown(): IommuError {
  try {
    fail('EINVAL', 'length 0x0 is zero');
  } catch (e) {
    return e as IommuError;
  }
  throw new Error('fail() returned');
}

test('setErrorStacks(false) drops the stack frames, keeps errno and explanation, restores the global limit', () => {
  const limit = Error.stackTraceLimit;
  try {
    setErrorStacks(false);
    const e = thrown();
    assert.equal(e.errno, Errno.EINVAL);
    assert.equal(e.explanation, 'length 0x0 is zero');
    assert.equal(e.message, 'EINVAL: length 0x0 is zero');
    assert.doesNotMatch(e.stack ?? '', /\n\s+at /, 'no frames');
    assert.equal(Error.stackTraceLimit, limit, 'the global limit is left as it was');
    setErrorStacks(true);
    assert.match(thrown().stack ?? '', /\n\s+at /, 'frames again');
  } finally {
    setErrorStacks(true);
  }
});
