/**
 * Small byte arrays for the per-call copies of the daemon (kernel copies of user structs, staged
 * windows, read buffers). A Uint8Array of more than 64 bytes gets a backing store of its own: a
 * malloc, an external-memory account and a sweep, about a microsecond (three for 2 KiB), more than
 * the rest of a small ioctl. One of at most 64 bytes lives on V8's heap, cheap to make, but the
 * first subarray() of it, its `.buffer` or handing it to native code gives it such a backing store
 * there and then (about 1.2 µs). Arrays of 1 byte to 4 KiB are therefore views into 8 KiB chunks,
 * as Node's Buffer pool does; a chunk is freed when the last view into it goes. They are ordinary
 * zero-filled Uint8Arrays (slice copies; `.buffer` is the chunk, so a DataView over one needs its
 * byteOffset).
 */

const POOLED_MAX = 4096;
const CHUNK = 8192;

let chunk = new ArrayBuffer(CHUNK);
let used = 0;

/** A zero-filled array of `n` bytes. */
export function allocBytes(n: number): Uint8Array {
  if (n === 0 || n > POOLED_MAX) return new Uint8Array(n);
  // Chunks are never handed out twice, so the bytes are still the zeros they were created with.
  if (used + n > CHUNK) {
    chunk = new ArrayBuffer(CHUNK);
    used = 0;
  }
  const a = new Uint8Array(chunk, used, n);
  used += (n + 7) & ~7;
  return a;
}

/** A copy of `src[start, end)` (an array of its own, like `src.slice(start, end)`). */
export function copyBytes(src: Uint8Array, start = 0, end = src.length): Uint8Array {
  const out = allocBytes(end - start);
  out.set(start === 0 && end === src.length ? src : src.subarray(start, end));
  return out;
}

/** Whether two short arrays hold the same bytes (in JavaScript: Buffer.equals crosses into C++, three times as long for 16 bytes). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
