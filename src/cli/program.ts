import { Command, CommanderError } from 'commander';
import type { RegisterCommand } from './commands.js';
import { reportError, wantsJson } from './errors.js';
import { requireRootFor } from './root.js';

/** A command's module, loaded when the program is built. */
export type CommandModule = () => Promise<{ register: RegisterCommand }>;

/** The program with the commands of `modules`. */
export async function programOf(modules: readonly CommandModule[], json = false): Promise<Command> {
  const program = new Command('switchyard')
    .description('Kubernetes network policy, prefilter and services on iptables, nftables and eBPF')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .hook('preAction', (_program, action) => requireRootFor(action));
  // Under --json commander's own text would precede the JSON error: runProgram prints that
  // instead. Set before the commands are added, which copy it.
  if (json) program.configureOutput({ writeErr: () => undefined });
  for (const load of modules) (await load()).register(program);
  return program;
}

/**
 * Runs `argv` on the program `build` makes (told whether `--json` was asked) and returns the
 * process exit code (docs/cli.md: usage 2, failure 1).
 */
export async function runProgram(
  argv: readonly string[],
  build: (json: boolean) => Promise<Command>,
): Promise<number> {
  const json = wantsJson(argv.slice(2));
  const program = await build(json);
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportError(err, json, err instanceof CommanderError);
  }
}
