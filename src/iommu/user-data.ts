import { fail, hex } from '../lib/error.js';
import type { UserAccess } from '../iommufd/ucmd.js';

/**
 * Driver-specific data passed from user space (struct iommu_user_data): a type tag and a user
 * buffer. Drivers copy it with `copyStruct`, which applies the kernel's iommu_copy_struct_from_user
 * rules.
 */
export class UserData {
  constructor(
    readonly type: number,
    readonly uptr: bigint,
    readonly len: number,
    private readonly user: UserAccess,
  ) {}

  /**
   * Copy the data as the driver's struct: EINVAL for another data type, a length below the
   * struct's mandatory part or above its size; EFAULT if unreadable.
   */
  copyStruct(expectType: number, minLen: number, size: number): Uint8Array {
    if (this.type !== expectType) fail('EINVAL', `data_type ${hex(this.type)} is not ${hex(expectType)}`);
    if (this.len < minLen) fail('EINVAL', `data_len ${this.len} is below the ${minLen} bytes the driver needs`);
    if (this.len > size) fail('EINVAL', `data_len ${this.len} is above the driver's struct size ${size}`);
    const out = new Uint8Array(size);
    out.set(this.user.copyFromUser(this.uptr, this.len));
    return out;
  }
}

/** An array of driver-specific entries from user space (struct iommu_user_data_array). */
export class UserDataArray {
  /** Entries the driver completed; HWPT_INVALIDATE reports it back. */
  handled = 0;
  constructor(
    readonly type: number,
    readonly uptr: bigint,
    readonly entryLen: number,
    readonly entryNum: number,
    private readonly user: UserAccess,
  ) {}

  /** Entry `index` as the driver's struct (iommu_copy_struct_from_full_user_array rules). */
  entry(index: number, expectType: number, size: number): Uint8Array {
    if (this.type !== expectType) fail('EINVAL', `data_type ${hex(this.type)} is not ${hex(expectType)}`);
    if (this.entryLen !== size) fail('EINVAL', `entry_len ${this.entryLen} is not the driver's entry size ${size}`);
    return this.user.copyFromUser(this.uptr + BigInt(index) * BigInt(this.entryLen), size);
  }
}
