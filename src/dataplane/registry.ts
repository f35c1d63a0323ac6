import type { Backend, BackendName } from './backend.js';

/** Backends load lazily: the eBPF one pulls in koffi, the netfilter ones only shell out. One line each. */
const loaders: Partial<Record<BackendName, () => Promise<Backend>>> = {
  nftables: async () => (await import('./nftables/index.js')).nftablesBackend,
  iptables: async () => (await import('./iptables/index.js')).iptablesBackend,
  ebpf: async () => (await import('./ebpf/index.js')).ebpfBackend,
};

export function availableBackends(): BackendName[] {
  return Object.keys(loaders) as BackendName[];
}

export async function loadBackend(name: BackendName): Promise<Backend> {
  const load = loaders[name];
  if (!load)
    throw new Error(
      `backend '${name}' is not implemented yet (available: ${availableBackends().join(', ') || 'none'})`,
    );
  return load();
}
