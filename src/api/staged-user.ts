import { fail, hex } from '../lib/error.js';
import type { UserAccess } from '../iommufd/ucmd.js';

/**
 * The typed door's user memory: the caller's address space plus private staging buffers for the
 * arrays a command points at (IOVA range lists and the like). Staging lives at kernel-half
 * addresses, which no user address space maps, so it can never alias user memory.
 */
export const STAGING_BASE = 0xffff_8000_0000_0000n;

export class StagedUser implements UserAccess {
  // Created by the first stage(): most calls (MAP, UNMAP) never stage anything.
  private buffers: { addr: bigint; bytes: Uint8Array }[] | undefined;
  private next = STAGING_BASE;

  constructor(private readonly base: UserAccess) {}

  /** Place bytes in staging and return their address. */
  stage(bytes: Uint8Array): bigint {
    const addr = this.next;
    (this.buffers ??= []).push({ addr, bytes });
    this.next += BigInt((bytes.length + 15) & ~15) + 16n;
    return addr;
  }

  /** A zeroed staging buffer of `length` bytes. */
  alloc(length: number): { addr: bigint; bytes: Uint8Array } {
    const bytes = new Uint8Array(length);
    return { addr: this.stage(bytes), bytes };
  }

  private find(addr: bigint, length: number): { buf: Uint8Array; off: number } | undefined {
    if (addr < STAGING_BASE) return undefined;
    for (const b of this.buffers ?? []) {
      const off = addr - b.addr;
      if (off >= 0n && off + BigInt(length) <= BigInt(b.bytes.length)) return { buf: b.bytes, off: Number(off) };
    }
    fail('EFAULT', `address ${hex(addr)} (+${length}) is outside every staged buffer`);
  }

  copyFromUser(addr: bigint, length: number): Uint8Array {
    const s = this.find(addr, length);
    if (!s) return this.base.copyFromUser(addr, length);
    return s.buf.slice(s.off, s.off + length);
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    const s = this.find(addr, data.length);
    if (!s) return this.base.copyToUser(addr, data);
    s.buf.set(data, s.off);
  }
}
