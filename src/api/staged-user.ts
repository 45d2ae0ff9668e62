import { fail, hex } from '../lib/error.js';
import type { UserAccess } from '../iommufd/ucmd.js';

/**
 * The typed door's user memory: the caller's address space plus private staging buffers for the
 * arrays a command points at (IOVA range lists and the like). Staging lives at kernel-half
 * addresses, which no user address space maps, so it can never alias user memory.
 */
export const STAGING_BASE = 0xffff_8000_0000_0000n;

const SPAN_END = 1n << 64n;
const SPARSE_PAGE = 4096;

/** A staged buffer: dense bytes, or a sparse region whose pages exist once written (zeros before). */
interface Region {
  addr: bigint;
  /** Exclusive end, at most 2^64. */
  end: bigint;
  bytes?: Uint8Array;
  pages?: Map<bigint, Uint8Array>;
}

export class StagedUser implements UserAccess {
  // Created by the first stage(): most calls (MAP, UNMAP) never stage anything.
  private regions: Region[] | undefined;
  private next = STAGING_BASE;

  constructor(private readonly base: UserAccess) {}

  /** Place bytes in staging and return their address. */
  stage(bytes: Uint8Array): bigint {
    const addr = this.next;
    (this.regions ??= []).push({ addr, end: addr + BigInt(bytes.length), bytes });
    this.next += BigInt((bytes.length + 15) & ~15) + 16n;
    return addr;
  }

  /** A zeroed staging buffer of `length` bytes. */
  alloc(length: number): { addr: bigint; bytes: Uint8Array } {
    const bytes = new Uint8Array(length);
    return { addr: this.stage(bytes), bytes };
  }

  /**
   * A zeroed staging region of any length (a caller-chosen size_t, up to the end of the address
   * space), materialised page by page as the handler writes it. For buffers whose size comes from
   * the caller, where a dense allocation could be impossible; read the result with copyFromUser.
   */
  allocSparse(length: bigint): bigint {
    const addr = this.next;
    const end = addr + length < SPAN_END ? addr + length : SPAN_END;
    (this.regions ??= []).push({ addr, end, pages: new Map() });
    this.next = end + 16n;
    return addr;
  }

  private find(addr: bigint, length: number): Region | undefined {
    if (addr < STAGING_BASE) return undefined;
    const end = addr + BigInt(length);
    for (const r of this.regions ?? []) if (addr >= r.addr && end <= r.end) return r;
    fail('EFAULT', `address ${hex(addr)} (+${length}) is outside every staged buffer`);
  }

  copyFromUser(addr: bigint, length: number): Uint8Array {
    const r = this.find(addr, length);
    if (!r) return this.base.copyFromUser(addr, length);
    if (r.bytes) {
      const off = Number(addr - r.addr);
      return r.bytes.slice(off, off + length);
    }
    const out = new Uint8Array(length);
    this.eachPage(r, addr, length, (page, inPage, done, n) => {
      if (page) out.set(page.subarray(inPage, inPage + n), done);
    });
    return out;
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    const r = this.find(addr, data.length);
    if (!r) return this.base.copyToUser(addr, data);
    if (r.bytes) {
      r.bytes.set(data, Number(addr - r.addr));
      return;
    }
    this.eachPage(r, addr, data.length, (page, inPage, done, n, index) => {
      let p = page;
      if (!p) {
        // An unwritten page reads as zeros: writing zeros to it (a clear_user) needs no page.
        if (allZero(data, done, n)) return;
        r.pages!.set(index, (p = new Uint8Array(SPARSE_PAGE)));
      }
      p.set(data.subarray(done, done + n), inPage);
    });
  }

  /** Walk [addr, addr + length) of a sparse region page by page. */
  private eachPage(
    r: Region,
    addr: bigint,
    length: number,
    fn: (page: Uint8Array | undefined, inPage: number, done: number, n: number, index: bigint) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const off = addr - r.addr + BigInt(done);
      const index = off / BigInt(SPARSE_PAGE);
      const inPage = Number(off % BigInt(SPARSE_PAGE));
      const n = Math.min(SPARSE_PAGE - inPage, length - done);
      fn(r.pages!.get(index), inPage, done, n, index);
      done += n;
    }
  }
}

function allZero(data: Uint8Array, from: number, n: number): boolean {
  for (let i = from, end = from + n; i < end; i++) if (data[i] !== 0) return false;
  return true;
}
