import type { Backend, BackendName } from './backend.js';
import type { FeatureName } from '../bpf/features.js';

/** What every backend can be built with. */
export interface BackendOptions {
  /**
   * Flow records: the dataplane reports each new allowed connection and each denied packet
   * (eBPF ring buffer events, NFLOG). Default true; off for measuring what they cost.
   */
  flowLogs?: boolean;
  /**
   * Test hook (lab tests, through the agent's SWITCHYARD_TEST_REFUSE_WRITES): while this file
   * exists the kernel refuses every write of the backend. nftables only; the others ignore it.
   */
  refuseWritesWhile?: string;
}

/** Backends load lazily: the eBPF one pulls in koffi, the netfilter ones only shell out. One line each. */
const loaders: Partial<Record<BackendName, (o: BackendOptions) => Promise<Backend>>> = {
  nftables: async (o) => (await import('./nftables/index.js')).createNftablesBackend(o),
  iptables: async (o) => new (await import('./iptables/index.js')).IptablesBackend(o),
  ebpf: async (o) => (await import('./ebpf/index.js')).createEbpfBackend(o),
};

export function availableBackends(): BackendName[] {
  return Object.keys(loaders) as BackendName[];
}

export async function loadBackend(name: BackendName, options: BackendOptions = {}): Promise<Backend> {
  const load = loaders[name];
  if (!load)
    throw new Error(
      `backend '${name}' is not implemented yet (available: ${availableBackends().join(', ') || 'none'})`,
    );
  return load(options);
}

// ---------------------------------------------------------------------------------------------
// Backend traits: what each backend is, as data, so code outside the dataplane (the advisor, the
// benches) asks about a property instead of comparing backend names.

export interface BackendTraits {
  /** Kernel features (probed by src/bpf/features.ts) the backend cannot run without. */
  requires: readonly FeatureName[];
  /**
   * Where the prefilter drops: at XDP, in the driver before the stack allocates anything, or in
   * netfilter's raw table (before conntrack, after the socket buffer exists).
   */
  prefilterHook: 'xdp' | 'raw-table';
  /** Services balanced once per connection at connect(2) (no per-packet NAT), or by NAT rules. */
  serviceBalancing: 'connect-time' | 'nat';
  /** Flow records can name the process (pid, comm) that opened the connection. */
  processContext: boolean;
  /** Policy as linear rule chains read top to bottom: the simplest to operate and debug. */
  linearRules: boolean;
}

const TRAITS: Record<BackendName, BackendTraits> = {
  iptables: {
    requires: [],
    prefilterHook: 'raw-table',
    serviceBalancing: 'nat',
    processContext: false,
    linearRules: true,
  },
  nftables: {
    requires: [],
    prefilterHook: 'raw-table',
    serviceBalancing: 'nat',
    processContext: false,
    linearRules: false,
  },
  ebpf: {
    // tcx links attach policy; LPM tries hold every IP set (flows need only a per-CPU hash).
    requires: ['tcx', 'lpm_trie'],
    prefilterHook: 'xdp',
    serviceBalancing: 'connect-time',
    processContext: true,
    linearRules: false,
  },
};

export function isBackendName(name: string): name is BackendName {
  return Object.hasOwn(TRAITS, name);
}

export function describeBackend(name: BackendName): BackendTraits {
  return TRAITS[name];
}
