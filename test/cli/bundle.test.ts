/**
 * bin/iommufd-ts.js runs the bundle the install step made (dist/cli/main.mjs) while it is newer
 * than the sources, else the sources through tsx; both give the same results.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

test('bundle and sources: the same demo; a bundle older than a source file is not used', { timeout: 120000 }, () => {
  // A private copy of the tree (symlinked node_modules and shim) with a bundle built into it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-bundle-'));
  try {
    for (const f of ['bin', 'src', 'package.json']) fs.cpSync(path.join(REPO, f), path.join(dir, f), { recursive: true });
    fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
    fs.symlinkSync(path.join(REPO, 'shim'), path.join(dir, 'shim'));
    const built = spawnSync(process.execPath, [path.join(dir, 'bin/bundle.js')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    assert.equal(built.stderr, '', 'bundled without complaint');
    const bundle = path.join(dir, 'dist/cli/main.mjs');
    assert.ok(fs.existsSync(bundle));
    // The dependencies are inside (no CommonJS loading at start-up); Node's own modules stay imports.
    const text = fs.readFileSync(bundle, 'utf8');
    assert.doesNotMatch(text, /from "(commander|sorted-btree)"/);
    assert.match(text, /from "node:fs"/);
    const demo = (env: NodeJS.ProcessEnv) => {
      const r = spawnSync(process.execPath, [path.join(dir, 'bin/iommufd-ts.js'), 'demo', '--no-color'], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60000 });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const fromBundle = demo({});
    const fromSources = demo({ IOMMUFD_TS_BUNDLE: '0' });
    assert.equal(fromBundle, fromSources);
    assert.match(fromBundle, /IOVA_RANGES/);
    // Which one ran: a bundle made unloadable is skipped once a source file is newer.
    fs.writeFileSync(bundle, 'throw new Error("stale bundle ran");\n');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(bundle, old, old);
    assert.equal(demo({}), fromSources, 'sources newer than the bundle: the sources run');
    const now = new Date(Date.now() + 60_000);
    fs.utimesSync(bundle, now, now);
    const r = spawnSync(process.execPath, [path.join(dir, 'bin/iommufd-ts.js'), 'demo', '--no-color'], { encoding: 'utf8', timeout: 60000 });
    assert.notEqual(r.status, 0, 'a fresh bundle is what runs');
    assert.match(r.stderr, /stale bundle ran/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
