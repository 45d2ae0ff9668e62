/**
 * Reading small /proc files on the daemon's hot paths (every new client process is authenticated
 * through /proc/<pid>/status and /proc/<pid>/stat, and liveness checks read stat again).
 * fs.readFileSync costs 30-40 µs per file here (it fstats, sizes and grows a buffer, decodes); an
 * open, one read into a reused buffer and a close cost 13-18 µs. A file that fills the buffer is
 * read on until its end, so any length works.
 */
import * as fs from 'node:fs';

let scratch = Buffer.allocUnsafe(4096);

/** The whole file as latin1 text; throws what open/read throw (ENOENT for a gone process). */
export function readProcText(path: string): string {
  const fd = fs.openSync(path, 'r');
  try {
    let len = 0;
    for (;;) {
      if (len === scratch.length) {
        const bigger = Buffer.allocUnsafe(scratch.length * 2);
        scratch.copy(bigger, 0, 0, len);
        scratch = bigger;
      }
      // procfs files are generated per read call: position null continues where the last ended.
      const n = fs.readSync(fd, scratch, len, scratch.length - len, null);
      if (n === 0) break;
      len += n;
    }
    return scratch.toString('latin1', 0, len);
  } finally {
    fs.closeSync(fd);
  }
}
