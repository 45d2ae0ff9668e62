/**
 * iommufd-ts benchmarks. Run all:      npm run bench
 *                        Run some:     npm run bench -- fixed-typed auto-1m
 *                        List them:    npm run bench -- --list
 * (npm run bench is `node --expose-gc --import tsx bench/run.ts`; the heap figures need gc.)
 *
 * Each benchmark prints one line per figure: what was measured, the figure, the target and
 * whether the target is met. a./b. are the IOAS benchmarks, c. the device ones (map+unmap with
 * 0, 1 and 2 mock domains in the IOAS; attach/detach of a mock device over 10k mappings); what
 * each measures and the figures of a run are in bench/README.md.
 */
import { performance } from 'node:perf_hooks';
import { Bench } from 'tinybench';
import { DevIommu } from '../src/api/dev-iommu.js';
import { Iommufd } from '../src/api/iommufd.js';
import type { Ioas } from '../src/iommufd/ioas.js';
import { SimMachine } from '../src/mm/index.js';
import type { SimProcess } from '../src/mm/process.js';
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommuIoasAlloc,
  IommuIoasMap,
  IommuIoasUnmap,
} from '../src/uapi/iommufd.js';
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP } from '../src/uapi/ioctl.js';

const PAGE = 4096n;
/** Where the fixed-IOVA benchmarks put their live areas: every other page from 1 GiB. */
const LIVE_BASE = 1n << 30n;
const LIVE_AREAS = 10_000;
/** Pairs per tinybench iteration (one timer read per batch, not per pair). */
const BATCH = 100;

// ------------------------------------------------------------------------------ reporting

type Verdict = 'ok' | 'MISS' | 'report';
const results: { name: string; figure: string; target: string; verdict: Verdict }[] = [];

function line(name: string, figure: string, target: string, verdict: Verdict, note = ''): void {
  results.push({ name, figure, target, verdict });
  const v = verdict === 'report' ? '' : verdict === 'ok' ? '  [ok]' : '  [MISS]';
  console.log(`${name.padEnd(44)} ${figure.padStart(18)}   target ${target}${v}${note ? `   (${note})` : ''}`);
}

/**
 * Operations per second of `fn` (which does `perCall` operations) over `calls` calls, by wall
 * clock and by this process's CPU time. On a shared machine the CPU-time rate is the steadier one.
 */
function timedLoop(calls: number, perCall: number, fn: () => void): { wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  return { wall: (calls * perCall * 1000) / wallMs, cpu: (calls * perCall * 1e6) / (cpu.user + cpu.system) };
}

function fmtRate(perSec: number): string {
  return `${Math.round(perSec).toLocaleString('en-US')}/s`;
}
function fmtUs(ms: number): string {
  return `${(ms * 1000).toFixed(2)} µs`;
}

const gc = (globalThis as { gc?: () => void }).gc;
function heapUsed(): number {
  if (gc) {
    gc();
    gc();
  }
  return process.memoryUsage().heapUsed;
}

// ------------------------------------------------------------------------------ setup

function machine(): { p: SimProcess; buf: bigint } {
  const m = new SimMachine();
  const p = m.spawn({ name: 'bench' });
  // A few pages of user memory; without a domain nothing is pinned, so one page serves every map.
  const buf = p.mapAnonymous(16n * PAGE, { shared: true });
  return { p, buf };
}

/** Live area i sits at LIVE_BASE + 2i pages; the page after it is the hole the benchmark uses. */
function liveIova(i: number): bigint {
  return LIVE_BASE + BigInt(2 * i) * PAGE;
}
function holeIova(i: number): bigint {
  return liveIova(i) + PAGE;
}

async function tiny(name: string, fn: () => void): Promise<number> {
  const bench = new Bench({ time: 2000, warmupTime: 300, iterations: 64 });
  bench.add(name, fn);
  await bench.run();
  const t = bench.tasks[0]!;
  const r = t.result;
  if (r.state !== 'completed') throw new Error(`${name}: tinybench ${r.state}${'error' in r ? `: ${String(r.error)}` : ''}`);
  return r.period; // ms per call
}

// ------------------------------------------------------------------------------ a. fixed IOVA

async function fixedTyped(): Promise<void> {
  const { p, buf } = machine();
  const fd = new Iommufd(p);
  const ioasId = fd.ioasAlloc();
  for (let i = 0; i < LIVE_AREAS; i++) fd.ioasMap({ ioasId, userVa: buf, length: PAGE, iova: liveIova(i) });
  let k = 0;
  const batch = (): void => {
    for (let n = 0; n < BATCH; n++) {
      const iova = holeIova(k);
      if (++k === LIVE_AREAS) k = 0;
      fd.ioasMap({ ioasId, userVa: buf, length: PAGE, iova });
      fd.ioasUnmap(ioasId, iova, PAGE);
    }
  };
  const period = await tiny('fixed-typed', batch);
  const loop = timedLoop(500, BATCH, batch);
  if (fd.iovaRanges(ioasId).ranges.length !== 1 || fd.ctx.objects.get(ioasId) === undefined) throw new Error('lost the IOAS');
  const rate = (BATCH * 1000) / period;
  line('a. fixed 4K map+unmap, 10k live, typed', fmtRate(rate), '>= 200,000/s', rate >= 200_000 ? 'ok' : 'MISS', `CPU time: ${fmtRate(loop.cpu)}`);
  fd.close();
}

async function fixedBinary(): Promise<void> {
  const { p, buf } = machine();
  const dev = new DevIommu(p);
  // The command structs live in the process, as a C program's would: one MAP and one UNMAP
  // struct per hole, written once, so each ioctl only copies them in and out.
  const SLOTS = 256;
  const argMem = p.mapAnonymous(BigInt(SLOTS * 64 + 64), { shared: true });
  const allocArg = argMem + BigInt(SLOTS * 64);
  p.writeMem(allocArg, IommuIoasAlloc.encode(IommuIoasAlloc.make({ size: IommuIoasAlloc.size })));
  const ra = dev.ioctl(IOMMU_IOAS_ALLOC, allocArg);
  if (ra.ret) throw new Error(`IOAS_ALLOC: ${ra.explanation}`);
  const ioasId = IommuIoasAlloc.decode(p.readMem(allocArg, IommuIoasAlloc.size)).outIoasId;
  const flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
  const mapArg = (s: number): bigint => argMem + BigInt(s * 64);
  const unmapArg = (s: number): bigint => argMem + BigInt(s * 64 + 40);
  const writeSlot = (s: number, iova: bigint): void => {
    p.writeMem(mapArg(s), IommuIoasMap.encode({ size: IommuIoasMap.size, flags, ioasId, reserved: 0, userVa: buf, length: PAGE, iova }));
    p.writeMem(unmapArg(s), IommuIoasUnmap.encode({ size: IommuIoasUnmap.size, ioasId, iova, length: PAGE }));
  };
  for (let i = 0; i < LIVE_AREAS; i++) {
    writeSlot(0, liveIova(i));
    const r = dev.ioctl(IOMMU_IOAS_MAP, mapArg(0));
    if (r.ret) throw new Error(`IOAS_MAP: ${r.explanation}`);
  }
  // Slot s maps the hole after live area s * (LIVE_AREAS / SLOTS): spread over the whole table.
  const stride = Math.floor(LIVE_AREAS / SLOTS);
  for (let s = 0; s < SLOTS; s++) writeSlot(s, holeIova(s * stride));
  let k = 0;
  const batch = (): void => {
    for (let n = 0; n < BATCH; n++) {
      const s = k;
      if (++k === SLOTS) k = 0;
      if (dev.ioctl(IOMMU_IOAS_MAP, mapArg(s)).ret !== 0) throw new Error(`IOAS_MAP failed: ${dev.ctx.lastError?.message}`);
      if (dev.ioctl(IOMMU_IOAS_UNMAP, unmapArg(s)).ret !== 0) throw new Error(`IOAS_UNMAP failed: ${dev.ctx.lastError?.message}`);
    }
  };
  const period = await tiny('fixed-binary', batch);
  const loop = timedLoop(200, BATCH, batch);
  const rate = (BATCH * 1000) / period;
  line('a. fixed 4K map+unmap, 10k live, binary', fmtRate(rate), '(report)', 'report', `CPU time: ${fmtRate(loop.cpu)}`);
  dev.close();
}

// ------------------------------------------------------------------------------ b. 1M auto IOVA

const AUTO_AREAS = 1_000_000;
const PROBE = 1000;
const PROBE_REPEATS = 31;

/**
 * Mean time of one automatic-IOVA map while the IOAS holds its current areas: PROBE maps timed
 * together, then unmapped (untimed) so the IOAS is back where it was; the median of PROBE_REPEATS
 * such batches, so one major GC does not decide the figure.
 */
function probeMapTime(fd: Iommufd, ioasId: number, vas: readonly bigint[]): { wall: number; cpu: number } {
  const wall: number[] = [];
  const cpu: number[] = [];
  const iovas: bigint[] = new Array<bigint>(PROBE);
  for (let r = 0; r < PROBE_REPEATS; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < PROBE; i++) iovas[i] = fd.ioasMap({ ioasId, userVa: vas[i & 3]!, length: PAGE });
    wall.push((performance.now() - t0) / PROBE);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000 / PROBE);
    for (let i = PROBE - 1; i >= 0; i--) fd.ioasUnmap(ioasId, iovas[i]!, PAGE);
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  return { wall: median(wall), cpu: median(cpu) };
}

async function auto1m(): Promise<void> {
  const { p, buf } = machine();
  const fd = new Iommufd(p);
  const ioasId = fd.ioasAlloc();
  // Four user pages, each address computed once, as a program reusing its buffer would pass it.
  const vas = [0n, 1n, 2n, 3n].map((i) => buf + i * PAGE);

  // Per-map time with ~1k areas, on its own IOAS so the 1M one starts empty.
  const small = fd.ioasAlloc();
  for (let i = 0; i < 1000; i++) fd.ioasMap({ ioasId: small, userVa: vas[i & 3]!, length: PAGE });
  probeMapTime(fd, small, vas); // warm up the JIT on this path
  const at1k = probeMapTime(fd, small, vas);
  fd.ioasUnmapAll(small);
  fd.destroy(small);

  const before = heapUsed();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < AUTO_AREAS; i++) fd.ioasMap({ ioasId, userVa: vas[i & 3]!, length: PAGE });
  const tMaps = performance.now() - t0;
  const cMaps = process.cpuUsage(c0);
  const after = heapUsed();
  const perArea = (after - before) / AUTO_AREAS;

  const at1m = probeMapTime(fd, ioasId, vas);

  const c1 = process.cpuUsage();
  const t1 = performance.now();
  const unmapped = fd.ioasUnmapAll(ioasId);
  const tUnmap = performance.now() - t1;
  const cUnmap = process.cpuUsage(c1);
  const sec = (c: NodeJS.CpuUsage): number => (c.user + c.system) / 1e6;
  if (unmapped !== BigInt(AUTO_AREAS) * PAGE) throw new Error(`unmap-all removed ${unmapped} bytes`);
  const total = (tMaps + tUnmap) / 1000;

  const cpuNote = (c: number): string => `CPU time: ${c.toFixed(2)} s, GC threads included`;
  line('b. 1M auto 4K maps + unmap-all, total', `${total.toFixed(2)} s`, '< 10 s', total < 10 ? 'ok' : 'MISS', cpuNote(sec(cMaps) + sec(cUnmap)));
  line('   of which 1M maps', `${(tMaps / 1000).toFixed(2)} s`, '(report)', 'report', cpuNote(sec(cMaps)));
  line('   of which unmap-all', `${(tUnmap / 1000).toFixed(2)} s`, '(report)', 'report', cpuNote(sec(cUnmap)));
  if (gc) line('b. heap per area', `${perArea.toFixed(0)} B`, '< 300 B', perArea < 300 ? 'ok' : 'MISS');
  else line('b. heap per area', 'n/a (no gc)', '< 300 B (run with node --expose-gc)', 'MISS');
  const ratio = at1m.wall / at1k.wall;
  const cpuRatio = at1m.cpu / at1k.cpu;
  line('   per-map time at ~1k areas', fmtUs(at1k.wall), '(report)', 'report', `CPU time: ${fmtUs(at1k.cpu)}`);
  line('   per-map time at ~1M areas', fmtUs(at1m.wall), '(report)', 'report', `CPU time: ${fmtUs(at1m.cpu)}`);
  line('b. per-map time 1M / 1k', `${ratio.toFixed(2)}x`, '<= 3x', ratio <= 3 ? 'ok' : 'MISS', `CPU time: ${cpuRatio.toFixed(2)}x`);
  fd.close();
}

// ------------------------------------------------------------------------------ c. devices

/**
 * Map+unmap pairs with 0, 1 and 2 mock domains in the IOAS (pinning and domain map/unmap). Two
 * MOCK_DOMAINs on one IOAS would share one auto HWPT (one domain), so the second domain is a
 * paging HWPT allocated on the IOAS with IOMMU_HWPT_ALLOC, which links (and mirrors every mapping
 * into) its domain at once.
 */
async function domains(): Promise<void> {
  for (const ndom of [0, 1, 2]) {
    const m = new SimMachine();
    const p = m.spawn({ name: 'bench', capabilities: ['CAP_IPC_LOCK'] });
    const buf = p.mapAnonymous(16n * PAGE, { shared: true });
    const fd = new Iommufd(p);
    const ioasId = fd.ioasAlloc();
    if (ndom >= 1) {
      const { idevId } = fd.testMockDomain(ioasId);
      for (let d = 1; d < ndom; d++) fd.hwptAlloc({ devId: idevId, ptId: ioasId });
    }
    const linked = (fd.ctx.objects.get(ioasId) as Ioas).iopt.domains.length;
    if (linked !== ndom) throw new Error(`the IOAS has ${linked} domain(s), the benchmark wants ${ndom}`);
    const base = 0x1000_0000n;
    let k = 0;
    const batch = (): void => {
      for (let n = 0; n < BATCH; n++) {
        const iova = base + BigInt(k) * PAGE;
        if (++k === 1024) k = 0;
        fd.ioasMap({ ioasId, userVa: buf, length: PAGE, iova });
        fd.ioasUnmap(ioasId, iova, PAGE);
      }
    };
    const period = await tiny(`domains-${ndom}`, batch);
    const rate = (BATCH * 1000) / period;
    line(`c. 4K map+unmap with ${ndom} mock domain(s)`, fmtRate(rate), 'report', 'report');
    fd.close();
  }
}

/** Attach/detach cycles of a mock device to an IOAS holding 10k mappings (each attach fills a domain). */
async function attachDetach(): Promise<void> {
  const m = new SimMachine();
  const p = m.spawn({ name: 'bench', capabilities: ['CAP_IPC_LOCK'] });
  const buf = p.mapAnonymous(16n * PAGE, { shared: true });
  const fd = new Iommufd(p);
  const ioasId = fd.ioasAlloc();
  for (let i = 0; i < LIVE_AREAS; i++) fd.ioasMap({ ioasId, userVa: buf, length: PAGE, iova: 0x1000_0000n + BigInt(i) * PAGE });
  const cycles = 20;
  const t = timedLoop(cycles, 1, () => {
    const { stdevId } = fd.testMockDomain(ioasId);
    fd.destroy(stdevId);
  });
  line('c. attach+detach, 10k mappings in the IOAS', fmtRate(t.wall), 'report', 'report', `${fmtUs(1000 / t.wall)} per cycle`);
  fd.close();
}

// ------------------------------------------------------------------------------ main

const BENCHES: Record<string, () => Promise<void>> = {
  'fixed-typed': fixedTyped,
  'fixed-binary': fixedBinary,
  'auto-1m': auto1m,
  domains,
  'attach-detach': attachDetach,
};

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--list')) {
    console.log(Object.keys(BENCHES).join('\n'));
    return;
  }
  const names = args.length ? args : Object.keys(BENCHES);
  for (const n of names) if (!BENCHES[n]) throw new Error(`unknown benchmark ${n}; known: ${Object.keys(BENCHES).join(', ')}`);
  const os = await import('node:os');
  const load = os.loadavg()[0]!.toFixed(2);
  console.log(
    `iommufd-ts bench — node ${process.version}, ${os.availableParallelism()} CPUs, load average ${load}${gc ? '' : ', no --expose-gc'}`,
  );
  for (const n of names) await BENCHES[n]!();
  const missed = results.filter((r) => r.verdict === 'MISS');
  console.log(missed.length ? `${missed.length} target(s) missed` : 'all targets met');
}

await main();
