/**
 * `switchyard lab conntrack`: the eBPF backend's connection table of every node of a running lab,
 * read from the pinned LRU map (netfilter backends keep theirs in the kernel's own conntrack,
 * which `conntrack -L` inside a node namespace shows).
 */
import type { Command } from 'commander';
import { DEFAULT_LAB } from '../lab/names.js';
import { readState } from '../lab/state.js';
import { CliError, formatTable, printJson } from './output.js';
import type { ConntrackEntry, GcResult } from '../dataplane/ebpf/index.js';

export interface NodeConntrack {
  node: string;
  /** Present with --gc: what collection removed before the table was read. */
  gc?: GcResult;
  entries: ConntrackEntry[];
}

export function registerLabConntrack(lab: Command): void {
  lab
    .command('conntrack')
    .description("the eBPF backend's connection tracking table, per node")
    .option('--name <lab>', 'lab name', DEFAULT_LAB)
    .option('--node <name>', 'only this node')
    .option('--gc', 'collect garbage first (expired entries, entries of pods that are gone)')
    .option('--json', 'machine-readable: [{node, gc?, entries: [...]}]')
    .action(async (opts: { name: string; node?: string; gc?: boolean; json?: boolean }) => {
      const state = readState(opts.name);
      if (!state)
        throw new CliError(`no lab '${opts.name}' (start one with 'switchyard lab up FILES --backend ebpf')`);
      if (state.backend !== 'ebpf')
        throw new CliError(
          `lab '${opts.name}' runs the ${state.backend} backend, whose connections are in each node namespace's ` +
            `kernel conntrack ('ip netns exec <node netns> conntrack -L' shows them)`,
        );
      const nodes = state.topology?.nodes ?? [];
      const selected = opts.node ? nodes.filter((n) => n.name === opts.node) : nodes;
      if (opts.node && selected.length === 0)
        throw new CliError(
          `lab '${opts.name}' has no node '${opts.node}' (nodes: ${nodes.map((n) => n.name).join(', ')})`,
          2,
        );
      const ebpf = await import('../dataplane/ebpf/index.js');
      const result: NodeConntrack[] = selected.map((n) => {
        const target = { scope: state.name, node: n.name, netns: n.netns };
        const gc = opts.gc ? ebpf.collectConntrackGarbage(target) : undefined;
        return { node: n.name, ...(gc ? { gc } : {}), entries: ebpf.readConntrack(target) };
      });
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
          e.endpoint ?? `ifindex ${e.ifindex}`,
          e.direction,
          e.protocol,
          `${e.src}:${e.sport}`,
          `${e.dst}:${e.dport}`,
          e.state + (e.replied ? '' : ' (unreplied)'),
          e.ageSeconds.toFixed(1),
          e.idleSeconds.toFixed(1),
          e.expiresInSeconds < 0 ? 'expired' : e.expiresInSeconds.toFixed(0),
          e.packets,
          e.bytes,
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
