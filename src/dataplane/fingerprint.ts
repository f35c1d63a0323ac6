/**
 * Drift detection for the agent: a digest of what a backend installed for one node, computed
 * from the kernel. The agent records it after every apply; a different digest later means
 * someone else changed the dataplane, and the agent repairs it.
 */
import type { Backend, NodeTarget } from './backend.js';

export async function kernelFingerprint(backend: Backend, target: NodeTarget): Promise<string> {
  switch (backend.name) {
    case 'nftables':
      return (await import('./nftables/fingerprint.js')).nftablesFingerprint(target.netns);
    case 'iptables': {
      const { IptablesBackend, iptablesModeFromEnv } = await import('./iptables/index.js');
      const mode = backend instanceof IptablesBackend ? backend.mode : iptablesModeFromEnv();
      return (await import('./iptables/fingerprint.js')).iptablesFingerprint(target.netns, mode);
    }
    case 'ebpf':
      return (await import('./ebpf/fingerprint.js')).ebpfFingerprint(target);
  }
}

/** Gets a drifted dataplane ready for a full apply; returns what it removed. */
export async function prepareRepair(backend: Backend, target: NodeTarget): Promise<string[]> {
  if (backend.name !== 'ebpf') return [];
  return (await import('./ebpf/fingerprint.js')).dropDetachedLinks(target);
}

export interface ChangeWatch {
  stop(): void;
}

/**
 * Calls `onChange` soon after anything changes in the node's nf_tables rulesets (nftables, and
 * iptables in its nf_tables flavour), so drift is noticed in milliseconds rather than at the
 * next poll. Returns undefined where the kernel offers no such events (eBPF links, legacy
 * iptables): polling alone covers those. The monitor dies with the agent (parent-death signal),
 * so a SIGKILLed agent leaves no process behind.
 */
export async function watchKernelChanges(
  backend: Backend,
  target: NodeTarget,
  onChange: () => void,
): Promise<ChangeWatch | undefined> {
  if (backend.name === 'ebpf') return undefined;
  if (backend.name === 'iptables') {
    const { IptablesBackend } = await import('./iptables/index.js');
    if (backend instanceof IptablesBackend && backend.mode === 'legacy') return undefined;
  }
  if (!target.netns.startsWith('sy-'))
    throw new Error(`refusing to watch outside a project namespace (${target.netns})`);
  const { spawn } = await import('node:child_process');
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', 'ip', 'netns', 'exec', target.netns, 'nft', 'monitor', 'ruleset'],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  child.on('error', () => undefined);
  child.stdout.on('data', () => onChange());
  return {
    stop: () => {
      child.kill('SIGKILL');
    },
  };
}
