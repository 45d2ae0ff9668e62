/**
 * Every real-kernel transcript in test/oracle/transcripts, replayed against the emulator: the
 * printed lines (return value, errno, every field written back) must be identical.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SimSyscalls } from '../../src/api/sim-syscalls.js';
import { SimMachine } from '../../src/mm/machine.js';
import { internalErrors } from '../../src/iommufd/main.js';
import { lockdep } from '../../src/lib/lockdep.js';
import { checkTranscript, type OracleTarget } from './replay.js';
import { SCENARIO_DIR, TRANSCRIPT_DIR } from './scenario.js';

/** Scenarios that need features of a later issue (devices, HWPTs, mock domains): name -> reason. */
export const PENDING: Record<string, string> = {
};

function emulatorTarget(): OracleTarget {
  const machine = new SimMachine();
  // The oracle runs its programs as root.
  const proc = machine.spawn({ uid: 0, capabilities: ['CAP_IPC_LOCK', 'CAP_SYS_RESOURCE', 'CAP_SYS_RAWIO'] });
  const sys = new SimSyscalls(proc);
  return {
    open: () => sys.open(),
    close: (fd) => void sys.close(fd),
    ioctl: (fd, cmd, arg) => {
      const r = sys.ioctl(fd, cmd, arg);
      return { ret: r.ret, errno: r.errno };
    },
    mmap: (length, kind) =>
      proc.mapAnonymous(length, { shared: kind !== 'private', hugetlb: kind === 'hugetlb' }),
    munmap: (addr, length) => proc.munmap(addr, length),
    read: (addr, len) => proc.readMem(addr, len),
    write: (addr, data) => proc.writeMem(addr, data),
    unmappedAddress: () => 0x1000_0000_0000n,
    readFd: (fd, addr, count) => {
      const r = sys.read(fd, addr, count);
      return { ret: r.ret, errno: r.errno };
    },
    writeFd: (fd, addr, count) => {
      const r = sys.write(fd, addr, count);
      return { ret: r.ret, errno: r.errno };
    },
    poll: (fd) => {
      const r = sys.poll(fd);
      return { ret: r.ret, errno: r.errno };
    },
    setMemlock: (bytes) => {
      proc.setRlimitMemlock(bytes);
      proc.revoke('CAP_IPC_LOCK');
      return { ret: 0, errno: 0 };
    },
    closeFd: (fd) => {
      const r = sys.close(fd);
      return r < 0 ? { ret: -1, errno: -r } : { ret: 0, errno: 0 };
    },
  };
}

const names = readdirSync(TRANSCRIPT_DIR)
  .filter((f) => f.endsWith('.txt'))
  .map((f) => f.slice(0, -4))
  .filter((n) => existsSync(join(SCENARIO_DIR, `${n}.json`)))
  .sort();

test('there are transcripts to replay', () => {
  assert.ok(names.length > 0);
});

for (const name of names) {
  const pending = PENDING[name];
  test(`oracle transcript ${name}`, pending ? { todo: pending } : {}, () => {
    const r = checkTranscript(name, emulatorTarget());
    if (r.firstDiff) {
      const i = r.firstDiff - 1;
      assert.fail(
        `${name}: line ${r.firstDiff} differs\n  kernel:   ${r.expected[i] ?? '<missing>'}\n  emulator: ${r.actual[i] ?? '<missing>'}`,
      );
    }
    assert.equal(internalErrors.length, 0, String(internalErrors[0]));
    assert.deepEqual(lockdep.violations, []);
  });
}
