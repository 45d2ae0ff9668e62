import { fail, hex } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { kernelWarn } from '../lib/warn.js';
import type { IommuDevice } from './device.js';
import type { IommuDomain } from './domain.js';
import { ResvType } from './resv.js';

/** What iommufd attaches with a domain: identifies the attachment in fault reports. */
export interface AttachHandle {
  domain?: IommuDomain;
}

/** Group numbers in use: one allocator for every driver, lowest free first (the kernel's iommu_group_ida). */
const groupIds = new Set<number>();

function allocGroupId(): number {
  let id = 0;
  while (groupIds.has(id)) id++;
  groupIds.add(id);
  return id;
}

/**
 * An IOMMU group (struct iommu_group): the unit the core attaches. Every device of the group
 * uses the same domain; DMA ownership is claimed for the whole group.
 */
export class IommuGroup {
  readonly devices: IommuDevice[] = [];
  /** The domain every device of the group translates through now. */
  domain: IommuDomain | null = null;
  defaultDomain: IommuDomain | null = null;
  blockingDomain: IommuDomain | null = null;
  owner: object | null = null;
  ownerCount = 0;
  /** The RID attachment made by iommufd (pasid_array[IOMMU_NO_PASID]). */
  handle: AttachHandle | null = null;
  readonly mutex: Lock;
  /** A system-wide unique number (iommufd keys its per-context groups by it). */
  readonly id: number;

  constructor() {
    this.id = allocGroupId();
    this.mutex = new Lock('group->mutex', `group ${this.id}`);
  }

  /**
   * The device joins the group (iommu probe). A firmware IOMMU_RESV_DIRECT region makes the
   * device require its 1:1 mapping from now on (iommu_create_device_direct_mappings sets
   * dev->iommu->require_direct whatever the default domain is), so joining a group that is on
   * its blocking domain (owned by user space) fails with EINVAL, as every later switch of the
   * group to a blocking domain does.
   */
  addDevice(dev: IommuDevice): void {
    const direct = dev.driver.getResvRegions(dev).find((r) => r.type === ResvType.DIRECT);
    if (direct) dev.requireDirect = { start: direct.start, last: direct.start + direct.length - 1n };
    if (this.domain) this.checkDirect(dev, this.domain);
    dev.group = this;
    this.devices.push(dev);
    if (!this.defaultDomain) {
      this.defaultDomain = dev.driver.defaultDomain(dev);
      this.domain = this.defaultDomain;
      this.domain.attachDev(dev);
    } else if (this.domain) this.domain.attachDev(dev);
  }

  /** __iommu_device_set_domain's first check: a require_direct device never goes on a blocking domain. */
  private checkDirect(dev: IommuDevice, domain: IommuDomain): void {
    const d = dev.requireDirect;
    if (d && (domain.kind === 'blocked' || domain === this.blockingDomain))
      fail(
        'EINVAL',
        `firmware requires a 1:1 mapping of [${hex(d.start)}, ${hex(d.last)}] (IOMMU_RESV_DIRECT) for ${dev.describe()}, ` +
          `so ${this.describe()} cannot be put on ${domain.describe()}; DMA ownership (VFIO, iommufd) needs that blocking domain`,
      );
  }

  /**
   * The device leaves the group (iommu_release_device when its driver model deletes it). The
   * last device takes the group's domains with it. Returns false if it was not in the group.
   */
  removeDevice(dev: IommuDevice): boolean {
    const i = this.devices.indexOf(dev);
    if (i < 0) return false;
    this.devices.splice(i, 1);
    if (!this.devices.length) {
      this.domain = null;
      this.defaultDomain = null;
      this.blockingDomain = null;
      groupIds.delete(this.id);
    }
    return true;
  }

  describe(): string {
    return `iommu group ${this.id}`;
  }

  /** iommu_device_claim_dma_owner */
  claimDmaOwner(owner: object): void {
    this.mutex.lock();
    try {
      if (this.ownerCount) {
        if (this.owner !== owner) fail('EPERM', `${this.describe()} is already owned by another iommufd context`);
        this.ownerCount++;
        return;
      }
      if ((this.domain && this.domain !== this.defaultDomain) || this.handle)
        fail('EBUSY', `${this.describe()} is not on its default domain, so DMA ownership cannot be taken`);
      const dev = this.devices[0]!;
      this.blockingDomain ??= dev.driver.blockedDomain(dev);
      this.setDomain(this.blockingDomain);
      this.owner = owner;
      this.ownerCount = 1;
    } finally {
      this.mutex.unlock();
    }
  }

  /** iommu_device_release_dma_owner */
  releaseDmaOwner(): void {
    this.mutex.lock();
    try {
      if (this.ownerCount > 1) {
        this.ownerCount--;
        return;
      }
      this.ownerCount = 0;
      this.owner = null;
      if (this.defaultDomain) this.setDomainNoFail(this.defaultDomain);
    } finally {
      this.mutex.unlock();
    }
  }

  /** iommu_attach_group_handle: EBUSY on a foreign domain, EINVAL for another driver's domain. */
  attachHandle(domain: IommuDomain, handle: AttachHandle): void {
    this.mutex.lock();
    try {
      if (this.handle) fail('EBUSY', `${this.describe()} already has an attachment`);
      if (this.domain && this.domain !== this.defaultDomain && this.domain !== this.blockingDomain)
        fail('EBUSY', `${this.describe()} is attached to ${this.domain.describe()} by someone else`);
      const dev = this.devices[0]!;
      if (domain.owner !== dev.driver.name)
        fail('EINVAL', `${domain.describe()} belongs to the ${domain.owner} driver, but ${dev.describe()} is behind ${dev.driver.name}`);
      handle.domain = domain;
      this.setDomain(domain);
      this.handle = handle;
    } finally {
      this.mutex.unlock();
    }
  }

  /** iommu_replace_group_handle */
  replaceHandle(domain: IommuDomain, handle: AttachHandle): void {
    this.mutex.lock();
    try {
      handle.domain = domain;
      this.setDomain(domain);
      this.handle = handle;
    } finally {
      this.mutex.unlock();
    }
  }

  /** iommu_detach_group_handle: back to the blocking domain (owned) or the default one. */
  detachHandle(): void {
    this.mutex.lock();
    try {
      const core = this.owner ? this.blockingDomain : this.defaultDomain;
      if (core) this.setDomainNoFail(core);
      this.handle = null;
    } finally {
      this.mutex.unlock();
    }
  }

  /** __iommu_device_set_domain: the require_direct check, then the driver's attach. */
  private setDeviceDomain(dev: IommuDevice, domain: IommuDomain): void {
    this.checkDirect(dev, domain);
    domain.attachDev(dev);
  }

  /**
   * With IOMMU_SET_DOMAIN_MUST_SUCCEED (error unwinding, release of ownership): a refusal is a
   * kernel WARN. A driver that failed the attach gets the blocking domain, if there is one, so it
   * drops its old domain; a require_direct refusal attaches nothing.
   */
  private setDeviceDomainMustSucceed(dev: IommuDevice, domain: IommuDomain): void {
    const warn = (e: unknown) =>
      kernelWarn(`${this.describe()}: ${dev.describe()} refused ${domain.describe()}, which must succeed: ${e instanceof Error ? e.message : String(e)}`);
    try {
      this.checkDirect(dev, domain);
    } catch (e) {
      warn(e);
      return;
    }
    try {
      domain.attachDev(dev);
    } catch (e) {
      warn(e);
      if (this.blockingDomain && this.blockingDomain !== domain) {
        try {
          this.blockingDomain.attachDev(dev);
        } catch {
          // Nothing left to fall back to; the kernel ignores this result too.
        }
      }
    }
  }

  /**
   * __iommu_group_set_domain_internal: switch every device in list order. On a failure every
   * device up to and including the failing one is attached to the old domain again (err_revert;
   * the failing driver may have dropped its old state), then the error is returned.
   */
  private setDomain(domain: IommuDomain): void {
    if (this.domain === domain) return;
    for (let i = 0; i < this.devices.length; i++) {
      try {
        this.setDeviceDomain(this.devices[i]!, domain);
      } catch (e) {
        const old = this.domain;
        if (old) for (const dev of this.devices.slice(0, i + 1)) this.setDeviceDomainMustSucceed(dev, old);
        throw e;
      }
    }
    this.domain = domain;
  }

  /** __iommu_group_set_domain_nofail: every device is tried; failures are WARNs; the group moves anyway. */
  private setDomainNoFail(domain: IommuDomain): void {
    if (this.domain === domain) return;
    for (const dev of this.devices) this.setDeviceDomainMustSucceed(dev, domain);
    this.domain = domain;
  }
}
