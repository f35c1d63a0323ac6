import type { Command } from 'commander';
import { commandModules, soloCommands } from './commands.js';
import { programOf, runProgram } from './program.js';

/**
 * The program with every command, or with `command` alone when it is one of `soloCommands` (an
 * agent process loads only what it runs).
 */
export async function buildProgram(opts: { json?: boolean; command?: string } = {}): Promise<Command> {
  const solo = opts.command !== undefined ? soloCommands.get(opts.command) : undefined;
  return programOf(solo ? [solo] : commandModules, opts.json);
}

/** Runs the CLI and returns the process exit code (docs/cli.md: usage 2, failure 1). */
export function main(argv: readonly string[]): Promise<number> {
  return runProgram(argv, (json) => buildProgram({ json, command: argv[2] }));
}
