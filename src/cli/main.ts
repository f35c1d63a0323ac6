import { Command, CommanderError } from 'commander';
import { commandModules, soloCommands } from './commands.js';
import { reportError, wantsJson } from './errors.js';
import { requireRootFor } from './root.js';

/**
 * The program with every command, or with `command` alone when it is one of `soloCommands` (an
 * agent process loads only what it runs).
 */
export async function buildProgram(opts: { json?: boolean; command?: string } = {}): Promise<Command> {
  const program = new Command('switchyard')
    .description('Kubernetes network policy, prefilter and services on iptables, nftables and eBPF')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .hook('preAction', (_program, action) => requireRootFor(action));
  // Under --json commander's own text would precede the JSON error: main prints that instead.
  // Set before the commands are added, which copy it.
  if (opts.json) program.configureOutput({ writeErr: () => undefined });
  const solo = opts.command !== undefined ? soloCommands.get(opts.command) : undefined;
  for (const load of solo ? [solo] : commandModules) (await load()).register(program);
  return program;
}

/** Runs the CLI and returns the process exit code (docs/cli.md: usage 2, failure 1). */
export async function main(argv: readonly string[]): Promise<number> {
  const json = wantsJson(argv.slice(2));
  const program = await buildProgram({ json, command: argv[2] });
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    return reportError(err, json, err instanceof CommanderError);
  }
}
