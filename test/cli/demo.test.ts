import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDemo } from '../../src/cli/demo.js';
import { closeReport, runSeedDemo } from '../../src/cli/seed.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { SimMachine } from '../../src/mm/machine.js';
import { internalErrors } from '../../src/iommufd/main.js';
import { lockdep } from '../../src/lib/lockdep.js';
import { Errno } from '../../src/lib/errno.js';

function capture(run: (o: { color: boolean; out: (s: string) => void }) => void): string {
  const lines: string[] = [];
  run({ color: false, out: (s) => lines.push(s) });
  return lines.join('\n');
}

test('the IOAS demo narrates every refusal with its errno and explanation', () => {
  const out = capture(runDemo);
  assert.doesNotMatch(out, /UNEXPECTED SUCCESS/);
  assert.match(out, /64 KiB mapped at IOVA 0x10000/);
  assert.match(out, /EEXIST +the same range again/);
  assert.match(out, /EINVAL +a mapping over the reserved range\n +\[0x2000000000, 0x2000000fff\] intersects the reserved range/);
  assert.match(out, /ENOENT +unmapping half of a mapping/);
  assert.match(out, /EPERM +setting the rlimit mode/);
  assert.match(out, /locked memory charged to uid 1000: 0 pages/);
  assert.equal(internalErrors.length, 0);
  assert.deepEqual(lockdep.violations, []);
});

test('the seed demo reproduces the thread: MSI window on replace, and the late-finalised ARM SMMU domain', () => {
  const out = capture(runSeedDemo);
  assert.doesNotMatch(out, /UNEXPECTED SUCCESS/);
  // Replace onto an IOAS whose mapping covers the MSI window fails and changes nothing.
  assert.match(out, /EADDRINUSE replace device 1 onto HWPT 5\n +reserving \[0x8000000, 0x80fffff\] for device nic0 hits the existing mapping/);
  // After the second replace the window moved from the old IOAS to the new one.
  assert.match(out, /IOAS 4 \(new\)\n.*\n +reserved: .*\[0x8000000, 0x80fffff\] by device nic0/);
  assert.match(out, /IOAS 2 \(old\)\n.*\n +reserved: +\[0x1000000000000, U64_MAX\] by arm-smmu-v3 s1 domain 1 \(aperture \[0x0, 0xffffffffffff\]\)\n/);
  // HWPT_ALLOC of an unfinalised arm-smmu domain: EADDRINUSE on a non-empty IOAS...
  assert.match(out, /EADDRINUSE IOMMU_HWPT_ALLOC for gpu0 on IOAS 7\n +reserving \[0x1, 0xffffffffffffffff\]/);
  // ...and a poisoned IOAS on an empty one, until the HWPT is destroyed.
  assert.match(out, /IOAS 8 \(poisoned\)\n.*\n.*\n +IOVA_RANGES: \[0x0, 0x0\]/);
  assert.match(out, /ENOSPC +an automatic mapping/);
  assert.match(out, /IOAS 8 \(still unusable\)\n.*\n.*\n +IOVA_RANGES: \[0x0, 0x0\]/);
  assert.match(out, /IOAS 8 \(usable again\)\n.*\n.*\n +IOVA_RANGES: \[0x0, U64_MAX\]/);
  // The auto-domain path finalises before linking.
  assert.match(out, /IOAS 7 \(with an automatic HWPT\)\n +mappings: +\[0x40000000, 0x400fffff\]/);
  // The MSI window refuses a fixed mapping once the device is attached.
  assert.match(out, /EINVAL +a fixed mapping at 0x8000000\n +\[0x8000000, 0x8000fff\] intersects the reserved range \[0x8000000, 0x80fffff\] \(reserved by device nic0\)/);
  // The poisoned IOAS: the whole space but IOVA 0 is reserved by the unfinalised domain, so a
  // fixed mapping is EINVAL.
  assert.match(out, /IOAS 8 \(poisoned\)\n +mappings: +-\n +reserved: +\[0x1, U64_MAX\] by arm-smmu domain 3 \(unfinalised\)\n/);
  assert.match(
    out,
    /EINVAL +a fixed mapping at 0x40000000\n +\[0x40000000, 0x40000fff\] intersects the reserved range \[0x1, 0xffffffffffffffff\] \(reserved by arm-smmu domain 3 \(unfinalised\)\)/,
  );
  // Close really released everything (the line is computed, not a fixed string).
  assert.match(out, /\nclosed \/dev\/iommu; every object released \(0 objects left, 0 pages pinned\)\.$/);
  assert.equal(internalErrors.length, 0);
  assert.deepEqual(lockdep.violations, []);
});

test('the closing line reports what close left: a bound kAPI device keeps the context and its objects', () => {
  const p = new SimMachine().spawn({ capabilities: ['CAP_IPC_LOCK'] });
  const fd = new Iommufd(p);
  const dev = fd.bindDevice(createArmSmmu().addDevice('gpu0'));
  const ioas = fd.ioasAlloc();
  const va = p.mapAnonymous(0x2000n);
  fd.ioasMap({ ioasId: ioas, userVa: va, length: 0x2000n, iova: 0x100000n });
  fd.attach(dev, ioas);
  fd.close();
  assert.equal(
    closeReport(fd.ctx, p.mm.pinnedVm),
    'closed /dev/iommu; context NOT released (1 file reference(s) left), 3 object(s) left (device 1 (gpu0), IOAS 2, auto paging HWPT 3), 2 page(s) still pinned.',
  );
  fd.unbindDevice(dev);
  assert.equal(closeReport(fd.ctx, p.mm.pinnedVm), 'closed /dev/iommu; every object released (0 objects left, 0 pages pinned).');
});

test('`iommufd-ts demo --no-color` as a subprocess: exit 0, IOVA_RANGES shown, refusals with errno name and explanation', { timeout: 60000 }, () => {
  const bin = fileURLToPath(new URL('../../bin/iommufd-ts.js', import.meta.url));
  const r = spawnSync(process.execPath, [bin, 'demo', '--no-color'], { encoding: 'utf8', timeout: 50000 });
  assert.equal(r.error, undefined);
  assert.equal(r.status, 0, `exit ${r.status} signal ${r.signal}\n${r.stderr}`);
  const out = r.stdout;
  assert.doesNotMatch(out, /\x1b\[/, 'no colour escapes with --no-color');
  assert.match(out, /IOVA_RANGES: \[0x0, 0xffffffffffffffff\]/);
  // A refusal: an errno name the kernel has, what was tried, and on the next line why.
  const refusals = [...out.matchAll(/^ {3}(E[A-Z0-9]+) +(\S.*)\n {4,}(\S.*)$/gm)];
  assert.ok(refusals.length >= 1, `no refusal in:\n${out}`);
  for (const [, name, what, why] of refusals) {
    assert.ok(name! in Errno, `${name} is not an errno name`);
    assert.ok(what!.length > 0 && why!.length > 0);
  }
  assert.ok(refusals.some(([, name, , why]) => name === 'EEXIST' && /overlaps the existing mapping/.test(why!)));
  assert.doesNotMatch(out, /UNEXPECTED SUCCESS|ENOTRECOVERABLE|internal emulator error/);
  assert.equal(r.stderr, '');
});
