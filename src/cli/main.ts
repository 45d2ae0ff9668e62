import { Command } from 'commander';
import { runDemo } from './demo.js';
import { runSeedDemo } from './seed.js';

const program = new Command();
program
  .name('iommufd-ts')
  .description("Linux 6.12's iommufd (/dev/iommu) emulated in user space")
  .version('0.1.0');

program
  .command('demo')
  .description('a narrated run on the built-in simulated machine: IOAS objects, maps, unmaps, IOVA ranges, refusals')
  .argument('[story]', '"ioas" (default) or "seed": device replace, the MSI window and late-finalised ARM SMMU domains', 'ioas')
  .option('--no-color', 'plain output')
  .action((story: string, opts: { color: boolean }) => {
    const o = { color: opts.color && process.stdout.isTTY === true, out: (s: string) => process.stdout.write(s + '\n') };
    if (story === 'seed') runSeedDemo(o);
    else if (story === 'ioas') runDemo(o);
    else program.error(`unknown demo "${story}": choose ioas or seed`);
  });

await program.parseAsync(process.argv);
