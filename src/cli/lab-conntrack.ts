/**
 * `switchyard lab conntrack`: the connection table of every node of a running lab, as its backend
 * keeps it: the eBPF backend's pinned LRU map (with the hook and endpoint that admitted each
 * connection, and garbage collection), or the netfilter backends' kernel conntrack of each node
 * namespace.
 */
import type { Command } from 'commander';
import type { ConntrackEntry, ConntrackGc } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { readState, type LabState } from '../lab/state.js';
import { chooseLab, labNotUp, type LabFlags } from './lab-choice.js';
import { labNodeOptions, selectLabNodes } from './lab-nodes.js';
import { CliError, formatTable, printJson } from './output.js';

export interface NodeConntrack {
  node: string;
  /** Present with --gc: what collection removed before the table was read. */
  gc?: ConntrackGc;
  entries: ConntrackEntry[];
}

/** Each selected node's table, collected first with --gc where the backend collects its own. */
async function readTables(
  state: LabState,
  nodes: readonly { name: string; netns: string }[],
  gc: boolean,
): Promise<NodeConntrack[]> {
  if (state.backend === 'none')
    throw new CliError(`lab '${state.name}' runs no backend (start it with --backend)`);
  const backend = await loadBackend(state.backend);
  const result: NodeConntrack[] = [];
  for (const n of nodes) {
    const table = backend.conntrack({ scope: state.name, node: n.name, netns: n.netns });
    if (gc && !table.collectGarbage)
      throw new CliError(`--gc: the ${table.description} expires its entries itself`, 2);
    const collected = gc ? await table.collectGarbage?.() : undefined;
    result.push({ node: n.name, ...(collected ? { gc: collected } : {}), entries: await table.list() });
  }
  return result;
}

function printTables(state: LabState, result: readonly NodeConntrack[]): void {
  for (const r of result) {
    if (r.gc)
      process.stdout.write(
        `node ${r.node}: collected ${r.gc.expired} expired and ${r.gc.orphaned} orphaned of ${r.gc.scanned} entries\n`,
      );
  }
  const rows = result.flatMap((r) =>
    r.entries.map((e) => [
      r.node,
      e.endpoint ?? (e.ifindex !== undefined ? `ifindex ${e.ifindex}` : '-'),
      e.direction ?? '-',
      e.protocol,
      `${e.src}:${e.sport}`,
      `${e.dst}:${e.dport}`,
      e.state + (e.replied ? '' : ' (unreplied)'),
      e.ageSeconds?.toFixed(1) ?? '-',
      e.idleSeconds?.toFixed(1) ?? '-',
      e.expiresInSeconds < 0 ? 'expired' : e.expiresInSeconds.toFixed(0),
      e.packets ?? '-',
      e.bytes ?? '-',
    ]),
  );
  process.stdout.write(`conntrack of lab ${state.name} (${rows.length} entries)\n`);
  process.stdout.write(
    formatTable(
      [
        'node',
        'endpoint',
        'admitted by',
        'proto',
        'source',
        'destination',
        'state',
        'age s',
        'idle s',
        'expires in s',
        'packets',
        'bytes',
      ],
      rows,
    ) + '\n',
  );
}

export function registerLabConntrack(lab: Command): void {
  labNodeOptions(lab.command('conntrack').description("the backend's connection tracking table, per node"))
    .option('--gc', 'collect garbage first (expired entries, entries of pods that are gone)')
    .option('--json', 'machine-readable: [{node, gc?, entries: [...]}]')
    .action(async (opts: LabFlags & { node?: string; gc?: boolean; json?: boolean }) => {
      const name = chooseLab(opts);
      const state = readState(name);
      if (!state) throw labNotUp(name);
      const nodes = selectLabNodes(name, state.topology?.nodes ?? [], opts.node);
      const result = await readTables(state, nodes, opts.gc ?? false);
      if (opts.json) return printJson(result);
      printTables(state, result);
    });
}
