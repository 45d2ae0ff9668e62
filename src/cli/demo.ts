import { Iommufd } from '../api/iommufd.js';
import { hex } from '../lib/error.js';
import { getIoas } from '../iommufd/ioas.js';
import { SimMachine } from '../mm/machine.js';
import { narrator, type DemoOptions } from './narrate.js';

export type { DemoOptions };

/**
 * The narrated tour of the IOAS core on the simulated machine. Every number printed is computed
 * by the emulator; the narration says what the kernel's rule is.
 */
export function runDemo(opts: DemoOptions): void {
  const { c, say, step, ok, refused, note } = narrator(opts);

  const machine = new SimMachine();
  const proc = machine.spawn({ name: 'vmm' });
  const iommufd = new Iommufd(proc);
  const MiB = 1024n * 1024n;
  const buf = proc.mapAnonymous(4n * MiB, { shared: true });

  const show = (ioasId: number) => {
    const ioas = getIoas(iommufd.ctx, ioasId);
    const areas = [...ioas.iopt.areas.all()].map((a) => `[${hex(a.iova)}, ${hex(a.last)}]`);
    const { ranges, alignment } = iommufd.iovaRanges(ioasId);
    say(`   IOAS ${ioasId}: ${areas.length} mapping(s) ${areas.join(' ')}`);
    say(`   IOVA_RANGES: ${ranges.map((r) => `[${hex(r.start)}, ${hex(r.last)}]`).join(' ')}  alignment ${hex(alignment)}`);
  };

  say(c('1', 'iommufd-ts demo: Linux 6.12 iommufd on a simulated machine'));
  say(`process ${proc.pid} (uid ${proc.uid}) opened /dev/iommu and mmap'ed 4 MiB of shared memory at ${hex(buf)}`);

  step('IOMMU_IOAS_ALLOC: two I/O address spaces');
  const a = iommufd.ioasAlloc();
  const b = iommufd.ioasAlloc();
  ok(`ioas ids ${a} and ${b} (ids are the lowest free integers from 1)`);
  show(a);

  step('IOMMU_IOAS_MAP with an automatic IOVA');
  const iova1 = iommufd.ioasMap({ ioasId: a, userVa: buf, length: 64n * 1024n });
  ok(`64 KiB mapped at IOVA ${hex(iova1)}: first fit from 0x1000, aligned to min(64 KiB, the user VA's alignment)`);
  const iova2 = iommufd.ioasMap({ ioasId: a, userVa: buf + 0x200000n, length: 2n * MiB });
  ok(`2 MiB mapped at IOVA ${hex(iova2)}: a 2 MiB-aligned buffer gets a 2 MiB-aligned IOVA`);
  const iova3 = iommufd.ioasMap({ ioasId: a, userVa: buf + 0x1234n, length: 0x100n });
  ok(`256 bytes from an unaligned address mapped at ${hex(iova3)}: the in-page offset ${hex(0x234n)} is kept`);
  show(a);

  step('IOMMU_IOAS_MAP at a fixed IOVA, and what the kernel refuses');
  iommufd.ioasMap({ ioasId: a, userVa: buf, length: 0x4000n, iova: 0x10_0000_0000n });
  ok('16 KiB at IOVA 0x1000000000');
  refused('the same range again', () => iommufd.ioasMap({ ioasId: a, userVa: buf, length: 0x4000n, iova: 0x10_0000_2000n }));
  iommufd.testAddReserved(a, 0x20_0000_0000n, 0x10_0000n);
  ok('IOMMU_TEST_OP_ADD_RESERVED reserved [0x2000000000, 0x20000fffff]');
  refused('a mapping over the reserved range', () => iommufd.ioasMap({ ioasId: a, userVa: buf, length: 0x1000n, iova: 0x20_0000_0000n }));
  refused('a mapping that is neither readable nor writeable', () =>
    iommufd.ioasMap({ ioasId: a, userVa: buf, length: 0x1000n, readable: false, writeable: false }),
  );
  show(a);

  step('IOMMU_IOAS_COPY: share the pages of a mapping with the second IOAS');
  const copied = iommufd.ioasCopy({ dstIoasId: b, srcIoasId: a, srcIova: iova1 + 0x1000n, length: 0x2000n });
  ok(`8 KiB from the middle of the first mapping copied to IOAS ${b} at ${hex(copied)} (same page container, no second pin)`);
  show(b);

  step('IOMMU_IOAS_UNMAP');
  refused('unmapping half of a mapping (the kernel never splits)', () => iommufd.ioasUnmap(a, iova1, 0x8000n));
  const n = iommufd.ioasUnmap(a, iova1, 64n * 1024n);
  ok(`unmapped ${hex(n)} bytes at ${hex(iova1)}`);
  refused('unmapping it again', () => iommufd.ioasUnmap(a, iova1, 64n * 1024n));
  ok(`unmap-all (iova 0, length U64_MAX) removed ${hex(iommufd.ioasUnmapAll(a))} bytes`);
  show(a);

  step('IOMMU_IOAS_ALLOW_IOVAS confines automatic allocation');
  iommufd.allowIovas(a, [{ start: 0x4000_0000n, last: 0x7fff_ffffn }]);
  const inside = iommufd.ioasMap({ ioasId: a, userVa: buf, length: 0x1000n });
  ok(`allowed [0x40000000, 0x7fffffff]; an automatic map now lands at ${hex(inside)}`);
  refused('reserving inside an allowed range', () => iommufd.testAddReserved(a, 0x5000_0000n, 0x1000n));

  step('IOMMU_OPTION and IOMMU_DESTROY');
  refused('turning off huge pages with an unaligned mapping present', () => {
    iommufd.ioasMap({ ioasId: b, userVa: buf + 0x10n, length: 0x10n, iova: 0x10n });
    iommufd.setHugePages(b, false);
  });
  refused('setting the rlimit mode without CAP_SYS_RESOURCE', () => iommufd.setRlimitModeMm(true));
  refused('destroying an id that does not exist', () => iommufd.destroy(42));
  iommufd.destroy(b);
  ok(`IOAS ${b} destroyed; its id is free again: the next IOAS gets id ${iommufd.ioasAlloc()}`);

  iommufd.close();
  say('\nclosed /dev/iommu: every object released, ' + `locked memory charged to uid ${proc.uid}: ${proc.user.lockedVm} pages`);
}
