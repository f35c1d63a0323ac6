/** An agent process builds the CLI with its own command alone: no other command's modules load. */
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { soloCommands } from '../../src/cli/commands.js';

describe('solo commands', () => {
  it('registers only the agent command (and its options) for `switchyard agent`', async () => {
    const program = await buildProgram({ command: 'agent' });
    expect(program.commands.map((c) => c.name())).toEqual(['agent']);
    const agent = program.commands[0];
    expect(agent?.options.map((o) => o.long)).toContain('--backend');
  });

  it('registers only supervise-agent for the supervisor', async () => {
    const program = await buildProgram({ command: 'supervise-agent' });
    expect(program.commands.map((c) => c.name())).toEqual(['supervise-agent']);
  });

  it('registers every command for any other first argument', async () => {
    for (const command of [undefined, 'lab', '--help', 'constructor']) {
      const names = (await buildProgram({ command })).commands.map((c) => c.name());
      expect(names).toEqual(expect.arrayContaining(['agent', 'lab', 'bench', 'supervise-agent', 'node']));
    }
    expect([...soloCommands.keys()].sort()).toEqual(['agent', 'supervise-agent']);
  });
});
