/**
 * eBPF map contents are drift (issue 24, item 4): a lab with agents on the eBPF backend, and each
 * kind of map the control plane writes tampered with through the project's own map API, as
 * bpftool would — a peer-set member, a decision-table verdict, a service backend, a prefilter
 * entry. Each must be counted as a repair within a second, and the denied pair closed again.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/agent/agent.js';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import { BpfMap, codecs, MapOfMaps } from '../../src/bpf/index.js';
import {
  FLOW_VERDICT,
  MAP,
  setLpmKey,
  tablePeerKey,
  tableValue,
  TABLE_KEY_KIND,
} from '../../src/dataplane/ebpf/layout.js';
import { mapPinPath } from '../../src/dataplane/ebpf/maps.js';
import { readMeta } from '../../src/dataplane/ebpf/meta.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { servicesDir } from '../../src/dataplane/ebpf/services.js';
import { backendKey, backendValue, SVC_MAP } from '../../src/dataplane/ebpf/services-layout.js';
import { agentStateDir } from '../../src/lab/agents.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { prefilter, service, toYaml } from '../support/manifests.js';
import { REPO } from './lab-harness.js';

const LAB = `drm${process.pid % 10000}`;
const WALKTHROUGH = join(REPO, 'examples', 'walkthrough');
/** Repairs are counted within this long after a tamper (netfilter's are, see agent.test.ts). */
const REPAIR_WITHIN_MS = 1000;

function node(pod: string): { name: string; netns: string } {
  const s = readState(LAB);
  const p = s?.topology?.pods.find((x) => x.id === pod);
  const n = s?.topology?.nodes.find((x) => x.name === p?.node);
  if (!n) throw new Error(`no node for ${pod}`);
  return n;
}

function allNodes(): string[] {
  return (readState(LAB)?.topology?.nodes ?? []).map((n) => n.name);
}

function address(pod: string): string {
  const p = readState(LAB)?.topology?.pods.find((x) => x.id === pod);
  if (!p) throw new Error(`no pod ${pod}`);
  return p.address;
}

function repairs(nodeName: string): Promise<number> {
  return agentRequest<AgentStatus>(apiSocket(agentStateDir(LAB, nodeName)), '/v1/status').then(
    (s) => s.repairs,
  );
}

async function reaches(from: string, to: string, port: number): Promise<boolean> {
  const r = await measureReach(LAB, { port, protocol: 'TCP', from: [from], timeoutMs: 400 });
  return r.matrix.results[from]?.[to] === true;
}

/**
 * Runs `tamper` and returns how long until one of the agents of `nodes` counted a repair (ms).
 * The scope's service maps are every node's: whichever agent polls first repairs them.
 */
async function repairedAfter(nodes: readonly string[], tamper: () => void): Promise<number> {
  const count = async (): Promise<number> =>
    (await Promise.all(nodes.map((n) => repairs(n).catch(() => 0)))).reduce((a, b) => a + b, 0);
  const before = await count();
  const started = performance.now();
  tamper();
  for (;;) {
    const elapsed = performance.now() - started;
    if ((await count()) > before) return elapsed;
    if (elapsed > 10_000) throw new Error(`no repair on ${nodes.join(', ')} within 10 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describeKernel('ebpf: tampered map contents are repaired like netfilter rules', () => {
  let dir: string;
  let files: string[];
  const measured: Record<string, number> = {};

  beforeAll(async () => {
    await labDown(LAB);
    dir = mkdtempSync(join(tmpdir(), 'sy-drift-'));
    const extra = join(dir, '30-extra.yaml');
    writeFileSync(
      extra,
      toYaml([
        prefilter('blocked', { cidrs: ['198.19.200.0/24', '198.19.210.0/24'] }),
        service('shop', 'api', {
          selector: { app: 'backend' },
          ports: [{ name: 'api', port: 80, targetPort: 8080, protocol: 'TCP' }],
        }),
      ]),
    );
    files = [WALKTHROUGH, extra];
    await converge({ name: LAB, model: loadManifests(files), files, mode: 'up', backend: 'ebpf' });
  }, 180_000);

  afterAll(async () => {
    await labDown(LAB);
    rmSync(dir, { recursive: true, force: true });
    console.log('eBPF map tamper → repair counted (ms):', measured);
  });

  it('a client put into every peer set is taken out again within a second', async () => {
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
    const n = node('shop/backend');
    const client = address('outside/client');
    const ms = await repairedAfter([n.name], () => {
      const trie = BpfMap.fromPin(mapPinPath(nodeDir(LAB, n.name), MAP.ipSets), setLpmKey, codecs.u32);
      try {
        const sets = new Set([...trie.keys()].map((k) => k.set));
        expect(sets.size).toBeGreaterThan(0);
        for (const set of sets) trie.update({ prefixlen: 64, set, addr: client }, 1);
      } finally {
        trie.close();
      }
    });
    measured.set = Math.round(ms);
    expect(ms).toBeLessThan(REPAIR_WITHIN_MS);
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
  });

  it('a service backend rewritten behind the agent is written back', async () => {
    const path = join(servicesDir(LAB), 'maps', SVC_MAP.backends);
    const read = (): string => {
      const m = BpfMap.fromPin(path, backendKey, backendValue);
      try {
        return JSON.stringify([...m.entries()].sort());
      } finally {
        m.close();
      }
    };
    const before = read();
    const ms = await repairedAfter(allNodes(), () => {
      const m = BpfMap.fromPin(path, backendKey, backendValue);
      try {
        for (const [k, v] of [...m.entries()]) m.update(k, { ...v, addr: address('outside/client') });
      } finally {
        m.close();
      }
    });
    measured.service = Math.round(ms);
    expect(ms).toBeLessThan(REPAIR_WITHIN_MS);
    await new Promise((r) => setTimeout(r, 100));
    expect(read()).toBe(before);
  });

  it('a prefilter entry deleted behind the agent is put back', async () => {
    const n = node('shop/backend');
    const path = mapPinPath(nodeDir(LAB, n.name), MAP.prefilter);
    const read = (): string[] => {
      const m = BpfMap.fromPin(path, codecs.ipv4LpmKey, codecs.u32);
      try {
        return [...m.keys()].sort();
      } finally {
        m.close();
      }
    };
    const before = read();
    expect(before).toContain('198.19.200.0/24');
    const ms = await repairedAfter([n.name], () => {
      const m = BpfMap.fromPin(path, codecs.ipv4LpmKey, codecs.u32);
      try {
        m.delete('198.19.200.0/24');
      } finally {
        m.close();
      }
    });
    measured.prefilter = Math.round(ms);
    expect(ms).toBeLessThan(REPAIR_WITHIN_MS);
    await new Promise((r) => setTimeout(r, 100));
    expect(read()).toEqual(before);
  });

  it('a decision-table verdict turned to allow is rebuilt within a second', async () => {
    await converge({ name: LAB, model: loadManifests(files), files, mode: 'apply', policyMode: 'table' });
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
    const n = node('shop/backend');
    const ndir = nodeDir(LAB, n.name);
    const indices = Object.values(readMeta(ndir)?.alloc.tables ?? {});
    expect(indices.length).toBeGreaterThan(0);
    const ms = await repairedAfter([n.name], () => {
      const tables = MapOfMaps.fromPin(mapPinPath(ndir, MAP.tables), codecs.u32);
      try {
        for (const i of indices) {
          const trie = tables.openInner(i, codecs.bytes(tablePeerKey.size), tableValue);
          if (!trie) continue;
          try {
            for (const [k, v] of [...trie.entries()])
              if (k[4] === TABLE_KEY_KIND.port && v.verdict === FLOW_VERDICT.deny)
                trie.update(k, { ...v, verdict: FLOW_VERDICT.allow });
          } finally {
            trie.close();
          }
        }
      } finally {
        tables.close();
      }
    });
    measured.table = Math.round(ms);
    expect(ms).toBeLessThan(REPAIR_WITHIN_MS);
    expect(await reaches('outside/client', 'shop/backend', 8080)).toBe(false);
  });
});
