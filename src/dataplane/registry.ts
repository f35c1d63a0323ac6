import type { Backend, BackendName } from './backend.js';

/** What every backend can be built with. */
export interface BackendOptions {
  /**
   * Flow records: the dataplane reports each new allowed connection and each denied packet
   * (eBPF ring buffer events, NFLOG). Default true; off for measuring what they cost.
   */
  flowLogs?: boolean;
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
