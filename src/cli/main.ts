import { Command, InvalidArgumentError } from 'commander';
import { GRANTABLE_CAPS } from '../host/host-task.js';
import type { Capability } from '../mm/types.js';
import { runDemo } from './demo.js';
import { runSeedDemo } from './seed.js';
import { runProgram } from '../host/run.js';
import { serve } from '../host/serve.js';

const program = new Command();
program
  .enablePositionalOptions()
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

/** `--cap NAME`: one of the capabilities the emulated kernel checks, granted to every client. */
function capOption(value: string, prev: Capability[] = []): Capability[] {
  const name = (value.toUpperCase().startsWith('CAP_') ? value.toUpperCase() : `CAP_${value.toUpperCase()}`) as Capability;
  if (!GRANTABLE_CAPS.includes(name)) throw new InvalidArgumentError(`choose one of ${GRANTABLE_CAPS.join(', ')}`);
  return prev.includes(name) ? prev : [...prev, name];
}
const CAP_HELP = `treat the program as holding capability NAME in the emulated kernel, which its process does not need to have (${GRANTABLE_CAPS.join(', ')}; repeatable)`;

program
  .command('run')
  .description('run an unmodified, dynamically linked program with /dev/iommu served by the emulator')
  .option('--trace <file>', 'write one strace-like line per ioctl to FILE')
  .option('--cap <name>', CAP_HELP, capOption)
  .argument('<program>', 'the program to run')
  .argument('[args...]', 'its arguments (put -- before them if they start with -)')
  .passThroughOptions()
  .action(async (prog: string, args: string[], opts: { trace?: string; cap?: Capability[] }) => {
    if (opts.cap?.length) process.stderr.write(`iommufd-ts: ${prog} holds ${opts.cap.join(', ')} in the emulated kernel (--cap)\n`);
    process.exitCode = await runProgram(prog, args, { traceFile: opts.trace, server: { grantCaps: opts.cap } });
  });

program
  .command('serve')
  .description('run the emulator as a standalone daemon for programs started with the shim preloaded')
  .requiredOption('--socket <path>', 'the unix socket to listen on (put it in a directory only you can reach)')
  .option('--trace <file>', 'write one strace-like line per ioctl to FILE ("-" for stdout)')
  .option('--cap <name>', CAP_HELP, capOption)
  .action(async (opts: { socket: string; trace?: string; cap?: Capability[] }) => {
    await serve(opts.socket, { traceFile: opts.trace, grantCaps: opts.cap });
  });

await program.parseAsync(process.argv);
