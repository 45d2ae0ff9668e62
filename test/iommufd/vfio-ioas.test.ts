/**
 * IOMMU_VFIO_IOAS (reference §2.10, §7.4). Oracle: test/oracle/transcripts/vfio-ioas.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { vfioIoas } from '../../src/iommufd/main.js';
import { IOMMU_VFIO_IOAS } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuVfioIoas } from '../../src/uapi/iommufd.js';
import { binWorld, checkInvariants, expectIoctl, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

test('the vfio-ioas.txt sequence up to the destroy of the compat IOAS', () => {
  const { fd } = world();
  const a = fd.ioasAlloc();
  const b = fd.ioasAlloc();
  throwsErrno(() => fd.vfioIoasGet(), 'ENODEV', /no compat IOAS/);
  throwsErrno(() => fd.vfioIoasSet(7), 'ENOENT', /\b7\b/);
  throwsErrno(() => fd.vfioIoasSet(0), 'ENOENT', /\b0\b/);
  fd.vfioIoasSet(a);
  assert.equal(fd.vfioIoasGet(), 1);
  fd.vfioIoasSet(b);
  assert.equal(fd.vfioIoasGet(), 2);
  // "CLEAR (ioas_id ignored)"
  fd.call(vfioIoas, IommuVfioIoas.make({ size: 12, op: 2, ioasId: 0x5555 }));
  throwsErrno(() => fd.vfioIoasGet(), 'ENODEV');
  fd.vfioIoasClear();
  throwsErrno(() => fd.call(vfioIoas, IommuVfioIoas.make({ size: 12, op: 3, ioasId: 1 })), 'EOPNOTSUPP', /unknown op 3\b/);
  throwsErrno(() => fd.call(vfioIoas, IommuVfioIoas.make({ size: 12, op: 0, ioasId: 1, reserved: 1 })), 'EOPNOTSUPP', /__reserved is 0x1\b/);
  fd.vfioIoasSet(a);
  // The pointer is weak: DESTROY of the compat IOAS succeeds and GET becomes ENODEV.
  fd.destroy(b);
  fd.destroy(a);
  throwsErrno(() => fd.vfioIoasGet(), 'ENODEV');
  // A new IOAS reusing id 1 is not the compat IOAS.
  assert.equal(fd.ioasAlloc(), 1);
  throwsErrno(() => fd.vfioIoasGet(), 'ENODEV');
});

test('binary door: GET writes ioas_id back, a failed GET leaves the struct alone (vfio-ioas.txt "GET with no compat IOAS", "GET")', () => {
  const w = binWorld();
  expectIoctl(ioctlStruct(w, 0x3b81, IommuIoasAlloc, {}).r, 'OK');
  const none = ioctlStruct(w, IOMMU_VFIO_IOAS, IommuVfioIoas, { op: 0, ioasId: 0x5555 });
  expectIoctl(none.r, 'ENODEV');
  assert.equal(none.out.ioasId, 0x5555);
  expectIoctl(ioctlStruct(w, IOMMU_VFIO_IOAS, IommuVfioIoas, { op: 1, ioasId: 1 }).r, 'OK');
  const got = ioctlStruct(w, IOMMU_VFIO_IOAS, IommuVfioIoas, { op: 0, ioasId: 0x5555 });
  expectIoctl(got.r, 'OK');
  assert.deepEqual(got.out, { size: 12, ioasId: 1, op: 0, reserved: 0 });
});

test('closing the context with a compat IOAS set clears the pointer', () => {
  const { fd } = world();
  fd.vfioIoasSet(fd.ioasAlloc());
  fd.close();
  assert.equal(fd.ctx.vfioIoas, null);
});
