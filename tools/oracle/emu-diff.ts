/**
 * Replays oracle scenarios against the emulator and prints every line that differs from the
 * stored real-kernel transcript (test/oracle/emulator.test.ts stops at the first one).
 *
 *   npx tsx tools/oracle/emu-diff.ts NAME...      (no name: all transcripts)
 *
 * Exit status 1 when any transcript differs.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SimSyscalls } from '../../src/api/sim-syscalls.js';
import { SimMachine } from '../../src/mm/machine.js';
import { checkTranscript, type OracleTarget } from '../../test/oracle/replay.js';
import { SCENARIO_DIR, TRANSCRIPT_DIR } from '../../test/oracle/scenario.js';

/** The emulator behind the OracleTarget interface (same as test/oracle/emulator.test.ts). */
export function emulatorTarget(): OracleTarget {
  const machine = new SimMachine();
  const proc = machine.spawn({ uid: 0, capabilities: ['CAP_IPC_LOCK', 'CAP_SYS_RESOURCE', 'CAP_SYS_RAWIO'] });
  const sys = new SimSyscalls(proc);
  const r2 = (r: { ret: number; errno: number }) => ({ ret: r.ret, errno: r.errno });
  return {
    open: () => sys.open(),
    close: (fd) => void sys.close(fd),
    ioctl: (fd, cmd, arg) => r2(sys.ioctl(fd, cmd, arg)),
    mmap: (length, kind) => proc.mapAnonymous(length, { shared: kind !== 'private', hugetlb: kind === 'hugetlb' }),
    munmap: (addr, length) => proc.munmap(addr, length),
    read: (addr, len) => proc.readMem(addr, len),
    write: (addr, data) => proc.writeMem(addr, data),
    unmappedAddress: () => 0x1000_0000_0000n,
    readFd: (fd, addr, count) => r2(sys.read(fd, addr, count)),
    writeFd: (fd, addr, count) => r2(sys.write(fd, addr, count)),
    poll: (fd) => r2(sys.poll(fd)),
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

let names = process.argv.slice(2).map((n) => n.replace(/^.*\//, '').replace(/\.(json|txt)$/, ''));
if (names.length === 0)
  names = readdirSync(TRANSCRIPT_DIR)
    .filter((f) => f.endsWith('.txt') && existsSync(join(SCENARIO_DIR, f.replace(/\.txt$/, '.json'))))
    .map((f) => f.slice(0, -4))
    .sort();
let bad = 0;
for (const name of names) {
  let r;
  try {
    r = checkTranscript(name, emulatorTarget());
  } catch (e) {
    console.log(`${name}: replay threw: ${e instanceof Error ? e.stack : String(e)}`);
    bad++;
    continue;
  }
  if (!r.firstDiff) {
    console.log(`${name}: same`);
    continue;
  }
  bad++;
  console.log(`${name}: differs`);
  for (let i = 0; i < Math.max(r.expected.length, r.actual.length); i++) {
    if (r.expected[i] === r.actual[i]) continue;
    console.log(`  line ${i + 1}\n    kernel:   ${r.expected[i] ?? '<missing>'}\n    emulator: ${r.actual[i] ?? '<missing>'}`);
  }
}
process.exit(bad ? 1 : 0);
