/** The nodes of a lab a per-node command (counters, conntrack) reads: all, or the one `--node` names. */
import { CliError } from './output.js';

/** All nodes, or only `--node`; an unknown `--node` is a usage error listing the lab's nodes. */
export function selectLabNodes<N extends { name: string }>(
  lab: string,
  nodes: readonly N[],
  only: string | undefined,
): N[] {
  if (!only) return [...nodes];
  const selected = nodes.filter((n) => n.name === only);
  if (selected.length === 0)
    throw new CliError(
      `lab '${lab}' has no node '${only}' (nodes: ${nodes.map((n) => n.name).join(', ')})`,
      2,
    );
  return selected;
}
