import { Command } from 'commander';
import { runDemo } from './demo.js';

const program = new Command();
program
  .name('iommufd-ts')
  .description("Linux 6.12's iommufd (/dev/iommu) emulated in user space")
  .version('0.1.0');

program
  .command('demo')
  .description('a narrated run on the built-in simulated machine: IOAS objects, maps, unmaps, IOVA ranges, refusals')
  .option('--no-color', 'plain output')
  .action((opts: { color: boolean }) => {
    runDemo({ color: opts.color && process.stdout.isTTY === true, out: (s) => process.stdout.write(s + '\n') });
  });

await program.parseAsync(process.argv);
