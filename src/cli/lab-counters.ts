/**
 * `switchyard lab counters`: per-rule packet and byte counters read from the kernel of every node
 * of a running lab, through the Backend interface (so any backend that implements counters works).
 */
import type { Command } from 'commander';
import type { BackendName, RuleCounter } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { readState } from '../lab/state.js';
import { chooseLab, labNotUp, type LabFlags } from './lab-choice.js';
import { labNodeOptions, selectLabNodes } from './lab-nodes.js';
import { CliError, formatTable, printJson } from './output.js';

export interface NodeCounters {
  node: string;
  counters: RuleCounter[];
}

export function registerLabCounters(lab: Command): void {
  labNodeOptions(
    lab.command('counters').description("per-rule packet and byte counters from each node's kernel"),
  )
    .option('--matched', 'only rules that counted at least one packet')
    .option('--json', 'machine-readable: [{node, counters: [{rule, endpoint, direction, packets, bytes}]}]')
    .action(async (opts: LabFlags & { node?: string; matched?: boolean; json?: boolean }) => {
      const name = chooseLab(opts);
      const state = readState(name);
      if (!state) throw labNotUp(name);
      if (state.backend === 'none')
        throw new CliError(`lab '${name}' runs without a backend: nothing installs rules, so nothing counts`);
      const nodes = state.topology?.nodes ?? [];
      if (nodes.length === 0) throw new CliError(`lab '${name}' has no nodes yet (status: ${state.status})`);
      const selected = selectLabNodes(name, nodes, opts.node);
      const backend = await loadBackend(state.backend as BackendName);
      const result: NodeCounters[] = await Promise.all(
        selected.map(async (n) => ({
          node: n.name,
          counters: await backend.counters({ scope: state.name, node: n.name, netns: n.netns }),
        })),
      );
      if (opts.json) return printJson(result);
      const rows = result.flatMap((r) =>
        r.counters
          .filter((c) => !opts.matched || c.packets > 0)
          .map((c) => [r.node, c.endpoint ?? '-', c.direction ?? '-', c.rule, c.packets, c.bytes]),
      );
      process.stdout.write(`${state.backend} counters of lab ${state.name}\n`);
      process.stdout.write(
        formatTable(['node', 'endpoint', 'direction', 'rule', 'packets', 'bytes'], rows) + '\n',
      );
    });
}
