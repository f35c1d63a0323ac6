/**
 * Backends apply deltas from a shadow of what they wrote (issue 21): after a first apply, a label
 * change of a remote pod is written without reading the node's maps, sets or rules back, and
 * writes only what changed; a kernel-side tamper is not in the shadow, so the fingerprint sees it,
 * and a repair (dropShadow, then apply) reads the kernel and converges to the desired state.
 * One namespace with a node's host-side veths, driven through the Backend contract directly.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmdirSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BpfMap, codecs } from '../../src/bpf/index.js';
import { inconsistency, type Backend, type NodeTarget } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { MAP, setLpmKey } from '../../src/dataplane/ebpf/layout.js';
import { mapPinPath, setEntryId } from '../../src/dataplane/ebpf/maps.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { serviceCgroup } from '../../src/dataplane/ebpf/services.js';
import { SVC_MAP } from '../../src/dataplane/ebpf/services-layout.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR, modelOf, namespace, networkPolicy, pod, service } from '../support/manifests.js';

const ID = process.pid % 10000;
const NETNS = `sy-shd${ID}`;
const TARGET: NodeTarget = { scope: `shd${ID}`, node: 'node-1', netns: NETNS };
const CLIENTS = 20;

/** db (node-1) takes 5432 from pods labelled role=client; 20 clients on node-2, `flipped` of them not. */
function irWith(flipped: readonly number[]): IR {
  return compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-1' }),
      pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.3', node: 'node-1' }),
      ...Array.from({ length: CLIENTS }, (_, i) =>
        pod('shop', `c${i}`, {
          labels: { role: flipped.includes(i) ? 'other' : 'client' },
          // Not adjacent: each client is a /32 of its own in the peer set (no aggregation).
          ip: `198.18.2.${10 + 2 * i}`,
          node: 'node-2',
        }),
      ),
      networkPolicy('shop', 'db-from-clients', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }], ports: [{ port: 5432 }] }],
      }),
      service('shop', 'db', {
        selector: { app: 'db' },
        ports: [{ name: 'pg', port: 5432, targetPort: 5432, protocol: 'TCP' }],
      }),
    ]),
    { nodeCount: 2 },
  );
}

function sh(...args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { stdio: 'pipe' });
}

function addVeths(ir: IR): void {
  for (const e of ir.endpoints.filter((x) => x.node === TARGET.node)) {
    sh(
      'ip',
      '-n',
      NETNS,
      'link',
      'add',
      e.hostInterface,
      'type',
      'veth',
      'peer',
      'name',
      `p${e.hostInterface.slice(-10)}`,
    );
    sh('ip', '-n', NETNS, 'link', 'set', e.hostInterface, 'up');
  }
}

/** Every member of the node's IP-set trie, as `set|addr/len`. */
function setMembers(): string[] {
  const trie = BpfMap.fromPin(
    mapPinPath(nodeDir(TARGET.scope, TARGET.node), MAP.ipSets),
    setLpmKey,
    codecs.u32,
  );
  try {
    return [...trie.keys()].map(setEntryId).sort();
  } finally {
    trie.close();
  }
}

/** The maps whose contents the control plane writes: sets and the scope's services. */
const WRITTEN_MAPS = new Set(['sy_ipsets', 'sy_portsets', SVC_MAP.services, SVC_MAP.backends]);

/**
 * Counts the elements the backend writes or deletes, and the reads (whole-map walks) of the maps
 * it writes, through the map API from now on; conntrack garbage collection reads traffic state,
 * not what was written, and is left out.
 */
function countMapCalls(): { writes: () => number; reads: () => number } {
  const writes = [
    vi.spyOn(BpfMap.prototype, 'updateBatch'),
    vi.spyOn(BpfMap.prototype, 'update'),
    vi.spyOn(BpfMap.prototype, 'delete'),
    vi.spyOn(BpfMap.prototype, 'deleteBatch'),
  ];
  const reads = [
    vi.spyOn(BpfMap.prototype, 'keys'),
    vi.spyOn(BpfMap.prototype, 'entries'),
    vi.spyOn(BpfMap.prototype, 'lookupBatch'),
  ];
  const ours = (ctx: unknown): boolean => ctx instanceof BpfMap && WRITTEN_MAPS.has(ctx.info.name);
  const elements = (spies: typeof writes): number =>
    spies.reduce(
      (n, s) =>
        n +
        s.mock.calls.reduce((m, call, i) => {
          if (!ours(s.mock.contexts[i])) return m;
          const first: unknown = call[0];
          return m + (Array.isArray(first) ? first.length : first !== undefined ? 1 : 0);
        }, 0),
      0,
    );
  const walks = (): number => reads.reduce((n, s) => n + s.mock.contexts.filter(ours).length, 0);
  return { writes: () => elements(writes), reads: walks };
}

describeKernel('backends apply deltas from their shadow', () => {
  const base = irWith([]);

  beforeAll(() => {
    if (existsSync(`/run/netns/${NETNS}`)) sh('ip', 'netns', 'del', NETNS);
    sh('ip', 'netns', 'add', NETNS);
    addVeths(base);
  });

  afterAll(() => {
    sh('ip', 'netns', 'del', NETNS);
    try {
      const cgroup = serviceCgroup(TARGET.scope);
      if (existsSync(cgroup)) rmdirSync(cgroup);
    } catch {
      // no cgroup2, or never created
    }
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  describe('ebpf', () => {
    let backend: Backend;

    beforeAll(async () => {
      backend = await loadBackend('ebpf');
    });

    afterAll(async () => {
      await backend.remove(TARGET);
    });

    it('a label change writes the one member that changed and reads no map back', async () => {
      await backend.apply(TARGET, base);
      const before = setMembers();
      const calls = countMapCalls();
      const r = await backend.apply(TARGET, irWith([3]), base);
      expect(calls.reads()).toBe(0);
      // One member out of the peer set, nothing else.
      expect(calls.writes()).toBe(1);
      expect(r.changed).toContain('ipsets');
      const after = setMembers();
      expect(before.filter((m) => !after.includes(m))).toEqual([expect.stringContaining('198.18.2.16/32')]);
      expect(after.filter((m) => !before.includes(m))).toEqual([]);
    });

    it('a tamper the shadow does not know is drift, and a repair converges', async () => {
      const desired = irWith([3]);
      await backend.apply(TARGET, desired);
      const clean = setMembers();
      const recorded = await backend.fingerprint(TARGET);
      // Someone puts an outside address into every set the node has.
      const trie = BpfMap.fromPin(
        mapPinPath(nodeDir(TARGET.scope, TARGET.node), MAP.ipSets),
        setLpmKey,
        codecs.u32,
      );
      try {
        for (const set of new Set(clean.map((m) => Number(m.split('|')[0]))))
          trie.update({ prefixlen: 64, set, addr: '198.19.200.1' }, 1);
      } finally {
        trie.close();
      }
      expect(await backend.fingerprint(TARGET)).not.toBe(recorded);
      // A delta apply trusts its shadow: the tamper stays until a repair.
      await backend.apply(TARGET, irWith([3, 4]), desired);
      expect(setMembers().some((m) => m.includes('198.19.200.1'))).toBe(true);

      backend.dropShadow(TARGET);
      await backend.prepareRepair(TARGET);
      await backend.apply(TARGET, irWith([3, 4]));
      const repaired = setMembers();
      expect(repaired.some((m) => m.includes('198.19.200.1'))).toBe(false);
      expect(repaired.some((m) => m.includes('198.18.2.18/32'))).toBe(false);
      expect(repaired).toHaveLength(clean.length - 1);
      // The repaired state reads back as itself, and the next delta again reads nothing.
      const fp = await backend.fingerprint(TARGET);
      expect(await backend.fingerprint(TARGET)).toBe(fp);
      const calls = countMapCalls();
      await backend.apply(TARGET, irWith([4]), irWith([3, 4]));
      expect(calls.reads()).toBe(0);
      expect(setMembers()).toHaveLength(clean.length);
    });

    it('a failed apply drops the shadow: the next apply reads the kernel', async () => {
      const failing = await loadBackend('ebpf');
      await failing.apply(TARGET, base);
      // An IR naming an interface the node lacks fails before anything is written.
      const broken: IR = {
        ...base,
        endpoints: base.endpoints.map((e) =>
          e.id === 'shop/db' ? { ...e, hostInterface: 'sy-missing0' } : e,
        ),
      };
      await expect(failing.apply(TARGET, broken, base)).rejects.toThrow(/host interfaces missing/);
      const calls = countMapCalls();
      await failing.apply(TARGET, irWith([5]), base);
      expect(calls.reads()).toBeGreaterThan(0);
    });
  });

  for (const name of ['nftables', 'iptables'] as const) {
    describe(name, () => {
      let backend: Backend;

      beforeAll(async () => {
        backend = await loadBackend(name);
      });

      afterAll(async () => {
        await backend.remove(TARGET);
      });

      it('an apply without `previous` writes only the set that changed (the shadow is the previous state)', async () => {
        await backend.apply(TARGET, base);
        const r = await backend.apply(TARGET, irWith([7]));
        expect(r.changed).toHaveLength(1);
        expect(r.changed[0]).toMatch(/sy-/);
      });

      it('a tamper the shadow does not know is drift, and a repair (dropShadow, apply) converges', async () => {
        await backend.apply(TARGET, base);
        const recorded = await backend.fingerprint(TARGET);
        const db = base.endpoints.find((e) => e.id === 'shop/db');
        if (!db) throw new Error('no shop/db');
        await backend.tamper(TARGET, db);
        const tampered = await backend.fingerprint(TARGET);
        expect(tampered).not.toBe(recorded);
        // A delta apply trusts its shadow and writes nothing: drift is the fingerprint's to find.
        expect((await backend.apply(TARGET, base)).changed).toEqual([]);
        backend.dropShadow(TARGET);
        await backend.prepareRepair(TARGET);
        expect((await backend.apply(TARGET, base)).changed).not.toEqual([]);
        const repaired = await backend.fingerprint(TARGET);
        expect(repaired).not.toBe(tampered);
        expect(inconsistency(repaired)).toBeUndefined();
        // Converged: the shadow is the kernel again.
        expect((await backend.apply(TARGET, base)).changed).toEqual([]);
        expect(await backend.fingerprint(TARGET)).toBe(repaired);
      });
    });
  }
});
