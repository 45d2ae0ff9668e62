/** The wire-format layer: struct codecs, ioctl numbers and the extensible-struct copy rules. */
export * from './struct.js';
export * from './iommufd.js';
export * from './iommufd-test.js';
export * from './vfio.js';
export * from './ioctl.js';
export * from './copy-struct.js';
