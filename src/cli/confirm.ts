/**
 * Destructive commands that reach beyond one named thing (`lab down --all`) ask first on a
 * terminal; a script says `--yes`. Without a terminal and without --yes they refuse: nothing a
 * pipe or CI job runs may remove other people's labs by accident.
 */
import { createInterface } from 'node:readline/promises';
import { CliError } from './output.js';

/** Resolves when the user (or --yes) agreed; throws a usage error otherwise. */
export async function confirmDestructive(question: string, flags: { yes?: boolean }): Promise<void> {
  if (flags.yes === true) return;
  if (process.stdin.isTTY !== true || process.stderr.isTTY !== true)
    throw new CliError(`${question}: refused without a terminal to ask on; add --yes to do it`, 2, {
      code: 'confirmation-required',
    });
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question}? [y/N] `);
    if (!/^y(es)?$/i.test(answer.trim()))
      throw new CliError('not confirmed: nothing was removed', 1, { code: 'not-confirmed' });
  } finally {
    rl.close();
  }
}
