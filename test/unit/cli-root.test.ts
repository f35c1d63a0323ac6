/** Commands that need root refuse other users before their action runs, in the same words. */
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { commandPath, requireRootFor, ROOT_COMMANDS } from '../../src/cli/root.js';

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}

describe('root-only commands', () => {
  it('names only commands that exist (a renamed command would slip through otherwise)', async () => {
    const paths = new Set(allCommands(await buildProgram()).map(commandPath));
    for (const path of ROOT_COMMANDS) expect(paths, path).toContain(path);
  });

  it('refuses each for a non-root user with "needs root", and lets root and pure commands through', async () => {
    const commands = allCommands(await buildProgram());
    for (const cmd of commands.filter((c) => ROOT_COMMANDS.has(commandPath(c)))) {
      expect(() => requireRootFor(cmd, 65534)).toThrow(/needs root \(run it with sudo\)/);
      expect(() => requireRootFor(cmd, 0)).not.toThrow();
    }
    for (const pure of ['validate', 'explain', 'reach', 'compile'])
      expect(() =>
        requireRootFor(commands.find((c) => commandPath(c) === pure) as Command, 65534),
      ).not.toThrow();
  });
});
