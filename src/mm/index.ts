/** The simulated memory of the emulator's built-in machine. */
export * from './types.js';
export * from './mman.js';
export * from './frames.js';
export * from './file.js';
export * from './vma.js';
export * from './mm.js';
export * from './process.js';
export * from './machine.js';
export * from './accounting.js';
