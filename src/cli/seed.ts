import { Iommufd } from '../api/iommufd.js';
import { createArmSmmu } from '../drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../drivers/arm-smmu-v3.js';
import { hex } from '../lib/error.js';
import { U64_MAX } from '../lib/u64.js';
import type { IommufdCtx } from '../iommufd/context.js';
import type { HwptPaging } from '../iommufd/hw-pagetable.js';
import { getIoas } from '../iommufd/ioas.js';
import { SimMachine } from '../mm/machine.js';
import { narrator, type DemoOptions } from './narrate.js';

/**
 * The seed thread, as a runnable story: HWPT_ALLOC, attach, map, replace onto another IOAS with
 * the MSI window reserved there first, and the ARM SMMU v1/v2 domain that is only finalised on
 * attach — allocated on a non-empty IOAS it fails, on an empty one it leaves the IOAS unusable.
 */
export function runSeedDemo(opts: DemoOptions): void {
  const { c, say, step, ok, refused, note } = narrator(opts);

  const machine = new SimMachine();
  const vmm = machine.spawn({ name: 'vmm', capabilities: ['CAP_IPC_LOCK'] });
  const iommufd = new Iommufd(vmm);
  const MiB = 1024n * 1024n;
  const guestRam = vmm.mapAnonymous(8n * MiB, { shared: true });
  const range = (s: bigint, l: bigint) => `[${hex(s)}, ${l === U64_MAX ? 'U64_MAX' : hex(l)}]`;

  const show = (ioasId: number, label: string) => {
    const ioas = getIoas(iommufd.ctx, ioasId);
    const iopt = ioas.iopt;
    say(`   ${c('36', `IOAS ${ioasId} (${label})`)}`);
    const areas = [...iopt.areas.all()].map((a) => range(a.iova, a.last));
    say(`     mappings:    ${areas.length ? areas.join(' ') : '-'}`);
    const reserved = iopt.reserved.all().map((r) => {
      const owner = r.owner === null ? 'test' : ((r.owner as { describe?: () => string }).describe?.() ?? 'owner');
      return `${range(r.start, r.last)} by ${owner}`;
    });
    say(`     reserved:    ${reserved.length ? reserved.join('; ') : '-'}`);
    const { ranges } = iommufd.iovaRanges(ioasId);
    say(`     IOVA_RANGES: ${ranges.map((r) => range(r.start, r.last)).join(' ') || '(none)'}`);
    const hwpts = (ioas.hwptList as HwptPaging[]).map((h) => {
      const devs = [...iommufd.ctx.groups.values()].filter((g) => g.hwpt?.paging === h).flatMap((g) => g.deviceList.map((d) => d.dev.name));
      return `${h.describe()}${devs.length ? ` <- ${devs.join(', ')}` : ''}`;
    });
    say(`     HWPTs:       ${hwpts.length ? hwpts.join('; ') : '-'}`);
  };

  say(c('1', 'iommufd-ts demo seed: device replace, the MSI window, and domains finalised on attach'));
  note('From the LKML thread "[PATCH v2 1/3] iommufd: Add devices_users to track the hw_pagetable usage by device"');
  note('(Feb 2023) and how Linux 6.12 settled each point.');

  // ------------------------------------------------------------------ part 1: SMMUv3-style
  step('1. An SMMUv3-style IOMMU: domains are finalised when they are allocated');
  const v3 = new ArmSmmuV3Driver();
  const nic = v3.addDevice('nic0');
  const nicId = iommufd.bindDevice(nic);
  ok(`bound ${nic.name} as device ${nicId}; it reports a software MSI window [0x8000000, 0x80fffff]`);
  const ioasA = iommufd.ioasAlloc();
  const hwptA = iommufd.hwptAlloc({ devId: nicId, ptId: ioasA });
  ok(`IOMMU_HWPT_ALLOC on IOAS ${ioasA} gave HWPT ${hwptA}: linked to the IOAS at once, aperture reserved`);
  show(ioasA, 'after HWPT_ALLOC');

  step('2. Attach the device to that HWPT: its reserved regions are imposed on the IOAS now');
  iommufd.attach(nicId, hwptA);
  ok(`device ${nicId} attached to HWPT ${hwptA}`);
  show(ioasA, 'after attach');

  step('3. Map guest memory; the MSI window is off limits');
  const iova = iommufd.ioasMap({ ioasId: ioasA, userVa: guestRam, length: 2n * MiB });
  ok(`2 MiB of guest RAM mapped at IOVA ${hex(iova)}`);
  refused('a fixed mapping at 0x8000000', () =>
    iommufd.ioasMap({ ioasId: ioasA, userVa: guestRam, length: 0x1000n, iova: 0x800_0000n }),
  );
  show(ioasA, 'after map');

  step('4. Replace onto a second IOAS whose mappings collide with the MSI window');
  const ioasB = iommufd.ioasAlloc();
  iommufd.ioasMap({ ioasId: ioasB, userVa: guestRam, length: 0x10_0000n, iova: 0x800_0000n });
  ok(`IOAS ${ioasB} maps 1 MiB at 0x8000000: allowed, nothing reserves that range there yet`);
  const hwptB = iommufd.hwptAlloc({ devId: nicId, ptId: ioasB });
  ok(`HWPT_ALLOC on IOAS ${ioasB} gave HWPT ${hwptB} (the aperture does not collide, the device is not attached)`);
  refused(`replace device ${nicId} onto HWPT ${hwptB}`, () => iommufd.replace(nicId, hwptB));
  note('Replace reserves every attached device\'s regions in the new IOAS under the group lock first;');
  note('the collision makes the whole replace fail and nothing changes: the device stays on HWPT ' + hwptA + '.');
  show(ioasB, 'after the failed replace');

  step('5. Unmap the colliding range and replace again');
  iommufd.ioasUnmap(ioasB, 0x800_0000n, 0x10_0000n);
  const now = iommufd.replace(nicId, hwptB);
  ok(`device ${nicId} now uses HWPT ${now}: the window was reserved in IOAS ${ioasB} before the switch,`);
  note(`and removed from IOAS ${ioasA} only after it succeeded. No IOAS mutex was taken, only the group lock.`);
  show(ioasA, 'old');
  show(ioasB, 'new');

  // ------------------------------------------------------------------ part 2: arm-smmu v1/v2
  step('6. An ARM SMMU v1/v2: its domains are only finalised by the first attach');
  const smmu = createArmSmmu({ vaBits: 48 });
  const gpu = smmu.addDevice('gpu0');
  const gpuId = iommufd.bindDevice(gpu);
  ok(`bound ${gpu.name} (behind ${smmu.describe()}) as device ${gpuId}`);
  const ioasC = iommufd.ioasAlloc();
  iommufd.ioasMap({ ioasId: ioasC, userVa: guestRam, length: 0x10_0000n, iova: 0x4000_0000n });
  ok(`IOAS ${ioasC} has a mapping at 0x40000000`);
  refused(`IOMMU_HWPT_ALLOC for ${gpu.name} on IOAS ${ioasC}`, () => iommufd.hwptAlloc({ devId: gpuId, ptId: ioasC }));
  note('The new domain has no geometry yet (aperture [0, 0]), so linking it reserves [1, U64_MAX],');
  note('which hits the mapping: "creation will fail".');
  show(ioasC, 'unchanged');

  step('7. The same on an empty IOAS: it succeeds, and poisons the IOAS');
  const ioasD = iommufd.ioasAlloc();
  const hwptD = iommufd.hwptAlloc({ devId: gpuId, ptId: ioasD });
  ok(`HWPT ${hwptD} allocated on the empty IOAS ${ioasD}`);
  show(ioasD, 'poisoned');
  refused('a fixed mapping at 0x40000000', () => iommufd.ioasMap({ ioasId: ioasD, userVa: guestRam, length: 0x1000n, iova: 0x4000_0000n }));
  refused('an automatic mapping', () => iommufd.ioasMap({ ioasId: ioasD, userVa: guestRam, length: 0x1000n }));
  iommufd.attach(gpuId, hwptD);
  ok(`attaching device ${gpuId} finalises the domain (aperture now 48 bits), but the IOAS read the geometry once:`);
  show(ioasD, 'still unusable');
  iommufd.detach(gpuId);
  iommufd.destroy(hwptD);
  ok(`only destroying HWPT ${hwptD} removes the [1, U64_MAX] reservation`);
  show(ioasD, 'usable again');

  step('8. The one path that works: attach to the IOAS itself (automatic domain, immediate attach)');
  const autoId = iommufd.attach(gpuId, ioasC);
  ok(`device ${gpuId} attached to IOAS ${ioasC} through new automatic HWPT ${autoId}: the empty domain was`);
  note('attached (and so finalised) first, and only then linked to the IOAS and filled with its mapping.');
  show(ioasC, 'with an automatic HWPT');
  note('Replace cannot take this path: it must link and populate before switching, so on this driver');
  note('a replace onto an IOAS needs an existing compatible automatic HWPT.');

  iommufd.detach(gpuId);
  iommufd.unbindDevice(gpuId);
  iommufd.detach(nicId);
  iommufd.unbindDevice(nicId);
  iommufd.close();
  say(`\n${closeReport(iommufd.ctx, vmm.mm.pinnedVm)}`);
}

/** What closing /dev/iommu really left behind (not what it should have): the demo's last line. */
export function closeReport(ctx: IommufdCtx, pinnedPages: number): string {
  const left = ctx.objects.objects().map((o) => o.describe());
  if (ctx.released && !left.length && pinnedPages === 0) return 'closed /dev/iommu; every object released (0 objects left, 0 pages pinned).';
  const file = ctx.released ? 'context released' : `context NOT released (${ctx.fileRefs} file reference(s) left)`;
  return `closed /dev/iommu; ${file}, ${left.length} object(s) left${left.length ? ` (${left.join(', ')})` : ''}, ${pinnedPages} page(s) still pinned.`;
}
