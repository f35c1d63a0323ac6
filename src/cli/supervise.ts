import { Command } from 'commander';
import { SUPERVISOR_MARK, superviseAgent, supervisedFromArgv } from '../lab/supervisor.js';

/**
 * `switchyard supervise-agent --switchyard-supervisor --node … (the agent's flags)`: what `lab up`
 * starts for each node (hidden: not for hand use). It keeps the node's agent running.
 */
export function register(program: Command): void {
  program
    .command('supervise-agent', { hidden: true })
    .description("run one lab node's agent and restart it when it exits")
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async () => {
      if (!process.argv.includes(SUPERVISOR_MARK))
        throw new Error(`supervise-agent needs ${SUPERVISOR_MARK}`);
      process.exitCode = await superviseAgent(supervisedFromArgv(process.argv));
    });
}
