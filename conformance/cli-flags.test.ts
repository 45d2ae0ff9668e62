/** The conformance run starts the CLI with the node flags of its #! line, as an installed command runs. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { nodeFlagsOf } from './cli-flags.js';

const CLI = fileURLToPath(new URL('../bin/iommufd-ts.js', import.meta.url));

test('the flags of a #! line: env -S node FLAGS, node FLAGS, none', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-flags-'));
  try {
    const file = (name: string, first: string): string => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, `${first}\nconsole.log(1);\n`);
      return p;
    };
    assert.deepEqual(nodeFlagsOf(file('a', '#!/usr/bin/env -S node --min-semi-space-size=16 --stack-size=2000')), ['--min-semi-space-size=16', '--stack-size=2000']);
    assert.deepEqual(nodeFlagsOf(file('b', '#!/usr/local/bin/node --max-old-space-size=512')), ['--max-old-space-size=512']);
    assert.deepEqual(nodeFlagsOf(file('c', '#!/usr/bin/env node')), []);
    assert.deepEqual(nodeFlagsOf(file('d', '// no #! line')), []);
    assert.deepEqual(nodeFlagsOf(path.join(dir, 'missing')), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the CLI asks for the daemon's young-generation size, and runs when executed directly through its #! line", () => {
  assert.deepEqual(nodeFlagsOf(CLI), ['--min-semi-space-size=16']);
  const r = spawnSync(CLI, ['--help'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Usage: iommufd-ts/);
  // The flag is one node accepts (a typo would make node refuse to start).
  const v = spawnSync(process.execPath, [...nodeFlagsOf(CLI), '-p', "require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size"], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.ok(Number(v.stdout) >= 16 * 1024 * 1024, `new space ${v.stdout.trim()} bytes`);
});
