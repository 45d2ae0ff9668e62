/** Reserved regions a device reports (enum iommu_resv_type). */
export const ResvType = {
  /** Memory that must stay identity-mapped (e.g. an RMRR). */
  DIRECT: 0,
  /** Like DIRECT, but may be dropped when a device is assigned to user space. */
  DIRECT_RELAXABLE: 1,
  /** Arbitrary "never map here" ranges. */
  RESERVED: 2,
  /** A hardware MSI doorbell (e.g. Intel's interrupt range). */
  MSI: 3,
  /** A software MSI window the IOMMU driver maps itself (e.g. SMMUv3). */
  SW_MSI: 4,
} as const;
export type ResvTypeValue = (typeof ResvType)[keyof typeof ResvType];

export interface ResvRegion {
  readonly start: bigint;
  readonly length: bigint;
  readonly type: ResvTypeValue;
}

export function resvTypeName(t: number): string {
  return ['DIRECT', 'DIRECT_RELAXABLE', 'RESERVED', 'MSI', 'SW_MSI'][t] ?? `type ${t}`;
}
