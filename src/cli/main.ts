import { Command, CommanderError } from 'commander';
import { commandModules } from './commands.js';
import { CliError } from './output.js';
import { requireRootFor } from './root.js';

export async function buildProgram(): Promise<Command> {
  const program = new Command('switchyard')
    .description('Kubernetes network policy, prefilter and services on iptables, nftables and eBPF')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride()
    .hook('preAction', (_program, action) => requireRootFor(action));
  for (const load of commandModules) (await load()).register(program);
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = await buildProgram();
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof CliError) {
      process.stderr.write(`switchyard: ${err.message}\n`);
      return err.exitCode;
    }
    const e = err as Error;
    process.stderr.write(`switchyard: ${e.message}\n`);
    if (process.env.SWITCHYARD_DEBUG) process.stderr.write(`${e.stack ?? ''}\n`);
    return 1;
  }
}
