/**
 * The eBPF backend: per endpoint and direction a policy program generated from the IR with the
 * toolkit's assembler (no clang), attached with tcx links on the host side of the pod's veth;
 * per node an LRU conntrack map, one LPM trie of IP sets, per-rule per-CPU counters, a ring
 * buffer for flow events (Log rules; allowed connections and denied packets unless
 * `flowLogs: false`) and an XDP prefilter on the fabric-facing interface. See docs/ebpf.md.
 */
import type { IR } from '../../ir/types.js';
import type { ApplyResult, Backend, NodeTarget, RenderedPlan, RuleCounter } from '../backend.js';
import { applyNode, removeNode, type ApplyOptions } from './apply.js';
import { readCounters } from './counters.js';
import { renderNode } from './render.js';

export type { ApplyOptions as EbpfBackendOptions } from './apply.js';
export { collectConntrackGarbage, readConntrack, type ConntrackEntry, type GcResult } from './conntrack.js';

export function createEbpfBackend(opts: ApplyOptions = {}): Backend {
  return {
    name: 'ebpf',
    render(ir: IR, node: string): RenderedPlan {
      return { backend: 'ebpf', node, text: renderNode(ir, node) };
    },
    apply(target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
      return applyNode(target, ir, previous, opts);
    },
    async remove(target: NodeTarget): Promise<void> {
      removeNode(target);
    },
    async counters(target: NodeTarget): Promise<RuleCounter[]> {
      return readCounters(target);
    },
  };
}

export const ebpfBackend: Backend = createEbpfBackend();
