/**
 * The eBPF backend: per endpoint and direction a policy program generated from the IR with the
 * toolkit's assembler (no clang), attached with tcx links on the host side of the pod's veth;
 * per node an LRU conntrack map, one LPM trie of IP sets, per-rule per-CPU counters, a per-CPU
 * hash of flow aggregates (Log rules; allowed connections and denied packets unless
 * `flowLogs: false`) and an XDP prefilter on the fabric-facing interface. See docs/ebpf.md.
 */
import { Link, probeFeatures, type FeatureName } from '../../bpf/index.js';
import type { IrChange } from '../../ir/delta.js';
import type { Endpoint, IR } from '../../ir/types.js';
import type {
  ApplyResult,
  Backend,
  ConntrackView,
  NodeTarget,
  RenderedPlan,
  RuleCounter,
  SupportReport,
} from '../backend.js';
import { checkPrefilterSize } from '../prefilter-limit.js';
import { applyNode, removeNode, type ApplyMemory, type ApplyOptions, type NodeMemory } from './apply.js';
import { ProgramCache } from './program-cache.js';
import type { ScopeServicesShadow } from './services.js';
import { Shadows } from '../shadow.js';
import { collectConntrackGarbage, countLiveConntrack, readConntrack } from './conntrack.js';
import { readCounters } from './counters.js';
import { ebpfFingerprint, prepareEbpfRepair } from './fingerprint.js';
import { forgetContentScans } from './map-contents.js';
import { createEbpfFlowSource } from './flow-source.js';
import { nodeDir, tcxLinkPin } from './paths.js';
import { renderNode } from './render.js';
import { nodeLimitFindings } from './complexity.js';
import { fullVerifierLogAsked } from './verifier-log.js';
import { nodePortXdpFromEnv } from './nodeport-xdp.js';
import { ebpfProbe } from './probe.js';

export type { ApplyOptions as EbpfBackendOptions } from './apply.js';
export { collectConntrackGarbage, readConntrack, type ConntrackEntry, type GcResult } from './conntrack.js';

/**
 * What the backend cannot run without: tcx links and LPM tries of IP sets (flow aggregates need
 * only a per-CPU hash, Linux 4.6+, older than tcx).
 */
const REQUIRED_FEATURES: readonly FeatureName[] = ['tcx', 'lpm_trie'];

function ebpfConntrack(target: NodeTarget): ConntrackView {
  return {
    description: `eBPF LRU conntrack map of node ${target.node}`,
    count: async () => countLiveConntrack(target),
    list: async () => readConntrack(target),
    collectGarbage: async () => collectConntrackGarbage(target),
  };
}

async function checkSupport(): Promise<SupportReport> {
  const missing = Object.entries(probeFeatures(REQUIRED_FEATURES))
    .filter(([, status]) => !status.available)
    .map(([name, status]) => `this kernel lacks ${name} (Linux ${status.since}+): ${status.detail}`);
  return { supported: missing.length === 0, missing };
}

/** Detaches the tcx link of the endpoint's ingress policy (on the host veth's egress hook). */
async function tamper(target: NodeTarget, endpoint: Endpoint): Promise<string> {
  const pin = tcxLinkPin(nodeDir(target.scope, target.node), endpoint.hostInterface, 'egress');
  const link = Link.fromPin(pin);
  try {
    link.detach();
  } finally {
    link.close();
  }
  return `detach the tcx link of ${endpoint.id}'s ingress policy (${pin})`;
}

export function createEbpfBackend(opts: ApplyOptions = {}): Backend {
  const applyOptions: ApplyOptions = {
    verifierLog: fullVerifierLogAsked(),
    nodePortXdp: nodePortXdpFromEnv(),
    ...opts,
  };
  // What this instance wrote: per node its set maps' shadow and its programs, per scope the
  // shared service maps' shadow (see apply.ts, services.ts).
  const nodes = new Shadows<NodeMemory>();
  const services = new Map<string, ScopeServicesShadow>();
  const memoryOf = (target: NodeTarget): ApplyMemory => {
    let node = nodes.get(target);
    if (!node) nodes.set(target, (node = { sets: undefined, programs: new ProgramCache() }));
    return { node, services };
  };
  const dropShadow = (target: NodeTarget): void => {
    nodes.drop(target);
    services.delete(target.scope);
  };
  return {
    name: 'ebpf',
    render(ir: IR, node: string): RenderedPlan {
      return { backend: 'ebpf', node, text: renderNode(ir, node) };
    },
    async apply(target: NodeTarget, ir: IR, previous?: IR, change?: IrChange): Promise<ApplyResult> {
      checkPrefilterSize('ebpf', ir, target.node);
      try {
        return await applyNode(target, ir, previous, applyOptions, memoryOf(target), change);
      } catch (e) {
        // What the kernel holds now is not known: the next apply and fingerprint read it in full.
        dropShadow(target);
        forgetContentScans();
        throw e;
      }
    },
    dropShadow,
    limits: nodeLimitFindings,
    async remove(target: NodeTarget): Promise<void> {
      dropShadow(target);
      removeNode(target);
    },
    async counters(target: NodeTarget): Promise<RuleCounter[]> {
      return readCounters(target);
    },
    fingerprint: async (target) => ebpfFingerprint(target),
    prepareRepair: async (target) => prepareEbpfRepair(target),
    // Links and maps have no change events; reading them back is cheap (map-contents.ts bounds
    // the cost of big maps), so poll often.
    watchChanges: async () => undefined,
    driftPollMs: 250,
    flowSource: (target, o) =>
      createEbpfFlowSource(target, o.pollMs !== undefined ? { pollMs: o.pollMs } : {}),
    conntrack: ebpfConntrack,
    checkSupport,
    tamper,
    probe: ebpfProbe,
  };
}

export const ebpfBackend: Backend = createEbpfBackend();
