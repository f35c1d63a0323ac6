/**
 * How many prefilter entries one apply may load on one node, per backend: above it the apply is
 * refused before anything touches the kernel (the previous prefilter stays in force), with an
 * error that says the size and the limit, instead of a loader that runs the machine out of memory.
 *
 * nftables is the tight one: nft 1.0.6 holds every element of an interval set in memory while it
 * builds the transaction (about 1.6 KB an element; 500,000 take ~770 MB), and again (~1.3 KB an
 * element) whenever it reads the set back. ipset restore streams (1.1M entries: 3.6 s, 2.4 MB peak
 * RSS, 56 MB in the kernel) and the eBPF trie is filled with one syscall an entry, so their limit
 * is the size they are built for.
 */
import { ApplyError, type BackendName } from './backend.js';
import type { IR } from '../ir/types.js';

export const PREFILTER_ELEMENT_LIMITS: Readonly<Record<BackendName, number>> = {
  nftables: 500_000,
  iptables: 1_000_000,
  ebpf: 1_000_000,
};

/** Lowers (or raises) every backend's limit: for tests, and for hosts with less memory to spare. */
export const PREFILTER_LIMIT_ENV = 'SWITCHYARD_MAX_PREFILTER_ENTRIES';

export function prefilterElementLimit(backend: BackendName): number {
  const override = Number(process.env[PREFILTER_LIMIT_ENV]);
  return Number.isInteger(override) && override > 0 ? override : PREFILTER_ELEMENT_LIMITS[backend];
}

/** Prefilter entries (normalised CIDRs, both families) installed on `node`. */
export function prefilterElements(ir: IR, node: string): number {
  const sets = new Set(ir.prefilters.filter((p) => p.nodes.includes(node)).map((p) => p.set));
  return ir.ipSets.filter((s) => sets.has(s.id)).reduce((n, s) => n + s.cidrs.length, 0);
}

/** Throws an ApplyError when `node`'s prefilters are larger than `backend` loads safely. */
export function checkPrefilterSize(backend: BackendName, ir: IR, node: string): void {
  const n = prefilterElements(ir, node);
  const limit = prefilterElementLimit(backend);
  if (n <= limit) return;
  const names = ir.prefilters.filter((p) => p.nodes.includes(node)).map((p) => p.name);
  throw new ApplyError(
    `${backend}: the prefilters of node ${node} (${names.join(', ')}) hold ${n} entries after merging, ` +
      `more than the limit of ${limit} for ${backend}; nothing was changed and the previous prefilter ` +
      `is still in force (merge the list into wider prefixes, split it over nodes, or use another backend)`,
    backend,
    undefined,
    // The same revision is refused the same way: an agent does not retry it.
    { deterministic: true },
  );
}
