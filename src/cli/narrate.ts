import { IommuError } from '../lib/error.js';

export interface DemoOptions {
  color: boolean;
  out: (line: string) => void;
}

/** The demos' voice: steps, successes, notes, and refusals shown with errno and explanation. */
export function narrator(opts: DemoOptions) {
  const c = (code: string, s: string) => (opts.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const say = (s: string) => opts.out(s);
  return {
    c,
    say,
    step: (s: string) => say('\n' + c('1', '== ' + s)),
    ok: (s: string) => say('   ' + c('32', 'ok ') + s),
    note: (s: string) => say('   ' + c('2', s)),
    /** Run something the kernel refuses and show the errno and the explanation. */
    refused: (what: string, fn: () => unknown) => {
      try {
        fn();
        say('   ' + c('31', 'UNEXPECTED SUCCESS ') + what);
      } catch (e) {
        if (!(e instanceof IommuError)) throw e;
        say(`   ${c('33', e.errnoName.padEnd(10))} ${what}\n              ${c('2', e.explanation)}`);
      }
    },
  };
}
