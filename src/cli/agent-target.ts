/** Which agents a command talks to: `--socket`, a lab's (one per node), or the only ones running. */
import { dirname } from 'node:path';
import { socketsIn, standaloneAgents } from '../agent/client.js';
import { agentStateDir, stateLabs } from '../lab/index.js';
import { LAB_ENV, labNotUp, labsUp, namedLab } from './lab-choice.js';
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
  const lab = namedLab(opts)?.name;
  if (lab) {
    found = socketsIn(dirname(agentStateDir(lab, 'x')));
    if (found.length === 0 && !labsUp().includes(lab)) throw labNotUp(lab);
    if (found.length === 0)
      throw new CliError(
        `lab '${lab}' runs no agents (is it up with a backend? 'switchyard lab status')`,
        1,
        { code: 'no-agents' },
      );
  } else {
    const labs = stateLabs().filter((l) => socketsIn(dirname(agentStateDir(l, 'x'))).length > 0);
    const standalone = standaloneAgents();
    if (labs.length + (standalone.length > 0 ? 1 : 0) > 1)
      throw new CliError(
        `several agents run here (labs: ${labs.join(', ') || '-'}${standalone.length ? '; standalone agents' : ''}) — ` +
          `choose with --lab NAME, $${LAB_ENV} or --socket PATH`,
        2,
        { code: 'lab-ambiguous', details: { labs } },
      );
    const only = labs[0];
    found = only ? socketsIn(dirname(agentStateDir(only, 'x'))) : standalone;
    if (found.length === 0)
      throw new CliError(
        "no agent is running: start a lab with a backend ('switchyard lab up FILES --backend ebpf')",
        1,
        { code: 'no-agents' },
      );
  }
  if (opts.node) {
    found = found.filter((a) => a.node === opts.node);
    if (found.length === 0) throw new CliError(`no agent for node '${opts.node}'`, 2);
  }
  return found;
}
