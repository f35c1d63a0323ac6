/** Which agents a command talks to: `--socket`, a lab's (one per node), or the only ones running. */
import { dirname } from 'node:path';
import { socketsIn, standaloneAgents } from '../agent/client.js';
import { agentStateDir, stateLabs } from '../lab/index.js';
import { CliError } from './output.js';

export interface AgentTargetOptions {
  socket?: string;
  lab?: string;
  node?: string;
}

export interface AgentEndpoint {
  node: string;
  socket: string;
}

export function resolveAgents(opts: AgentTargetOptions): AgentEndpoint[] {
  if (opts.socket) return [{ node: opts.node ?? '-', socket: opts.socket }];
  let found: AgentEndpoint[];
  if (opts.lab) {
    found = socketsIn(dirname(agentStateDir(opts.lab, 'x')));
    if (found.length === 0)
      throw new CliError(
        `lab '${opts.lab}' runs no agents (is it up with a backend? 'switchyard lab status')`,
      );
  } else {
    const labs = stateLabs().filter((l) => socketsIn(dirname(agentStateDir(l, 'x'))).length > 0);
    const standalone = standaloneAgents();
    if (labs.length + (standalone.length > 0 ? 1 : 0) > 1)
      throw new CliError(
        `several agents run here (labs: ${labs.join(', ') || '-'}${standalone.length ? '; standalone agents' : ''}): ` +
          `pick one with --lab NAME or --socket PATH`,
        2,
      );
    const lab = labs[0];
    found = lab ? socketsIn(dirname(agentStateDir(lab, 'x'))) : standalone;
    if (found.length === 0)
      throw new CliError(
        "no agent is running: start a lab with a backend ('switchyard lab up FILES --backend ebpf')",
      );
  }
  if (opts.node) {
    found = found.filter((a) => a.node === opts.node);
    if (found.length === 0) throw new CliError(`no agent for node '${opts.node}'`, 2);
  }
  return found;
}
