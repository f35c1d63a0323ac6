/**
 * `switchyard lab conntrack`: the connection table of every node of a running lab, as its backend
 * keeps it: the eBPF backend's pinned LRU map (with the hook and endpoint that admitted each
 * connection, and garbage collection), or the netfilter backends' kernel conntrack of each node
 * namespace.
 */
import type { Command } from 'commander';
import type { ConntrackEntry, ConntrackGc } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { DEFAULT_LAB } from '../lab/names.js';
import { readState } from '../lab/state.js';
import { CliError, formatTable, printJson } from './output.js';

export interface NodeConntrack {
  node: string;
  /** Present with --gc: what collection removed before the table was read. */
  gc?: ConntrackGc;
  entries: ConntrackEntry[];
}

export function registerLabConntrack(lab: Command): void {
  lab
    .command('conntrack')
    .description("the backend's connection tracking table, per node")
    .option('--name <lab>', 'lab name', DEFAULT_LAB)
    .option('--node <name>', 'only this node')
    .option('--gc', 'collect garbage first (expired entries, entries of pods that are gone)')
    .option('--json', 'machine-readable: [{node, gc?, entries: [...]}]')
    .action(async (opts: { name: string; node?: string; gc?: boolean; json?: boolean }) => {
      const state = readState(opts.name);
      if (!state)
        throw new CliError(`no lab '${opts.name}' (start one with 'switchyard lab up FILES --backend ebpf')`);
      const nodes = state.topology?.nodes ?? [];
      const selected = opts.node ? nodes.filter((n) => n.name === opts.node) : nodes;
      if (opts.node && selected.length === 0)
        throw new CliError(
          `lab '${opts.name}' has no node '${opts.node}' (nodes: ${nodes.map((n) => n.name).join(', ')})`,
          2,
        );
      if (state.backend === 'none')
        throw new CliError(`lab '${opts.name}' runs no backend (start it with --backend)`);
      const backend = await loadBackend(state.backend);
      const result: NodeConntrack[] = [];
      for (const n of selected) {
        const table = backend.conntrack({ scope: state.name, node: n.name, netns: n.netns });
        if (opts.gc && !table.collectGarbage)
          throw new CliError(`--gc: the ${table.description} expires its entries itself`, 2);
        const gc = opts.gc ? await table.collectGarbage?.() : undefined;
        result.push({ node: n.name, ...(gc ? { gc } : {}), entries: await table.list() });
      }
      if (opts.json) return printJson(result);
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
    });
}
