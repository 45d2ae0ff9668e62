/**
 * Kernel WARN()s outside a driver (iommufd and the IOMMU core). The kernel prints a backtrace and
 * carries on; so does the emulator, after recording the message here. Reaching one is either a
 * caller breaking a kAPI rule (tests provoke that on purpose and drain the list) or an emulator
 * bug: the per-test invariants (test/setup.ts) require the list to be empty otherwise. The mock
 * driver keeps its own WARNs in `MockIommuDriver.warnings`.
 */
export const kernelWarnings: string[] = [];

export function kernelWarn(message: string): void {
  kernelWarnings.push(message);
}
