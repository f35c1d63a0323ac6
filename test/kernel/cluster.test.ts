/**
 * Cluster mode against the real kernel and a real etcd: nodes take their desired state from etcd.
 *
 *   scale:   3 nodes × 50 pods on every backend; one policy change written to etcd flips what
 *            every node's dataplane lets through;
 *   faults:  etcd SIGKILLed → agents keep enforcing, writes fail, nothing acknowledged is lost,
 *            agents reconnect and catch up; an agent SIGKILLed → its dataplane keeps working, the
 *            next one resumes from its cache (or relists after a compaction); one node cut off
 *            from etcd in the kernel → it keeps its last state while the others move on, and
 *            converges after healing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/agent/agent.js';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import { BACKEND_NAMES } from '../../src/dataplane/backend.js';
import { listObjects } from '../../src/datastore/read.js';
import { agentStateDir, labAgents } from '../../src/lab/agents.js';
import {
  clusterApply,
  clusterStore,
  clusterConverge,
  clusterEtcd,
  clusterUp,
  healNode,
  killClusterEtcd,
  partitionNode,
  restartClusterEtcd,
} from '../../src/lab/cluster.js';
import { labDown, measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import type { Flow } from '../../src/observe/flows.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, toYaml, type Manifest } from '../support/manifests.js';
import { cli } from './lab-harness.js';

const PORT = 8080;
const tag = Math.random().toString(36).slice(2, 5);
const dirs: string[] = [];
const labs: string[] = [];

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'sy-cluster-test-'));
  dirs.push(d);
  return d;
}

/** `perNode` servers on each of `nodes` nodes plus one client per node; `allow` is the label peers need. */
function clusterManifests(nodes: number, perNode: number): Manifest[] {
  const out: Manifest[] = [namespace('scale')];
  for (let n = 1; n <= nodes; n++) {
    out.push(
      pod('scale', `client-${n}`, {
        labels: { role: 'client' },
        node: `node-${n}`,
        ports: [{ containerPort: PORT }],
      }),
    );
    for (let i = 0; i < perNode; i++)
      out.push(
        pod('scale', `s${n}-${i}`, {
          labels: { role: 'server', shard: `s${n}` },
          node: `node-${n}`,
          ports: [{ containerPort: PORT }],
        }),
      );
  }
  return out;
}

/** Servers (of `shard`, or all) admit only peers labelled role=`from`. */
function policy(from: string, shard?: string, name = 'servers'): Manifest {
  return networkPolicy('scale', name, {
    podSelector: { matchLabels: { role: 'server', ...(shard ? { shard } : {}) } },
    ingress: [{ from: [{ podSelector: { matchLabels: { role: from } } }], ports: [{ port: PORT }] }],
  });
}

function write(dir: string, file: string, manifests: Manifest[]): string {
  const path = join(dir, file);
  writeFileSync(path, toYaml(manifests));
  return path;
}

function status(lab: string, node: string): Promise<AgentStatus> {
  return agentRequest<AgentStatus>(apiSocket(agentStateDir(lab, node)), '/v1/status', { timeoutMs: 3000 });
}

/** Which servers each client reaches: `{client-1: {allowed, denied}}`. */
async function reach(
  lab: string,
  servers: (id: string) => boolean,
): Promise<Record<string, { allowed: number; denied: number }>> {
  const clients = (readState(lab)?.topology?.pods ?? [])
    .filter((p) => p.id.startsWith('scale/client-'))
    .map((p) => p.id);
  const r = await measureReach(lab, { port: PORT, protocol: 'TCP', from: clients, timeoutMs: 400 });
  const out: Record<string, { allowed: number; denied: number }> = {};
  for (const c of clients) {
    const row = r.matrix.results[c] ?? {};
    const targets = Object.entries(row).filter(([id]) => servers(id));
    out[c.slice('scale/'.length)] = {
      allowed: targets.filter(([, ok]) => ok).length,
      denied: targets.filter(([, ok]) => !ok).length,
    };
  }
  return out;
}

async function waitFor<T>(
  what: string,
  fn: () => Promise<T>,
  ok: (t: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let error: unknown;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (ok(last)) return last;
    } catch (e) {
      error = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `timed out waiting for ${what}: last ${JSON.stringify(last)} ${error ? String(error) : ''}`,
  );
}

afterAll(async () => {
  for (const lab of labs) await labDown(lab).catch(() => undefined);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

for (const backend of BACKEND_NAMES)
  describeKernel(`cluster scale on ${backend}: 3 nodes × 50 pods`, () => {
    const lab = `cs${backend.slice(0, 3)}${tag}`;
    const dir = tmp();
    const isServer = (id: string): boolean => id.startsWith('scale/s');

    beforeAll(async () => {
      labs.push(lab);
      const base = write(dir, '00-pods.yaml', clusterManifests(3, 50));
      write(dir, '10-policy.yaml', [policy('client')]);
      await clusterUp({ name: lab, files: [base, join(dir, '10-policy.yaml')], backend, nodeCount: 3 });
    }, 240_000);

    it('one policy change in etcd flips every node’s dataplane', async () => {
      const before = await reach(lab, isServer);
      for (const c of ['client-1', 'client-2', 'client-3'])
        expect(before[c]).toEqual({ allowed: 150, denied: 0 });

      write(dir, '10-policy.yaml', [policy('nobody')]);
      const started = performance.now();
      const done = await clusterApply(lab, [join(dir, '10-policy.yaml')]);
      const ms = performance.now() - started;
      expect(done.write.configured).toEqual(['NetworkPolicy scale/servers']);
      expect(done.pending).toEqual([]);
      for (const n of ['node-1', 'node-2', 'node-3']) {
        const s = await status(lab, n);
        expect(Number(s.revision)).toBeGreaterThanOrEqual(done.write.revision);
        expect(s.source).toBe(`etcd:${clusterEtcd(lab).clientUrl}`);
      }
      const after = await reach(lab, isServer);
      for (const c of ['client-1', 'client-2', 'client-3'])
        expect(after[c]).toEqual({ allowed: 0, denied: 150 });
      console.log(
        `${backend}: 150 pods, policy change in force on 3 nodes ${Math.round(ms)} ms after the write began`,
      );
    }, 120_000);

    afterAll(async () => {
      await labDown(lab);
    }, 60_000);
  });

describeKernel('cluster faults (ebpf): etcd down, an agent down, a node cut off', () => {
  const lab = `cf${tag}`;
  const dir = tmp();
  const shard = (s: string) => (id: string) => id.startsWith(`scale/${s}-`);
  let url = '';

  beforeAll(async () => {
    labs.push(lab);
    const base = write(dir, '00-pods.yaml', clusterManifests(3, 3));
    write(dir, '10-policy.yaml', [policy('client')]);
    await clusterUp({ name: lab, files: [base, join(dir, '10-policy.yaml')], backend: 'ebpf', nodeCount: 3 });
    url = clusterEtcd(lab).clientUrl;
  }, 120_000);

  afterAll(async () => {
    await labDown(lab);
  }, 60_000);

  it('flows of etcd-fed agents name the pod process that connected', async () => {
    await reach(lab, shard('s2'));
    const flows = await waitFor(
      'a flow with process context on node-1',
      () =>
        agentRequest<{ flows: Flow[] }>(
          apiSocket(agentStateDir(lab, 'node-1')),
          '/v1/flows?pod=scale/client-1&limit=50',
        ),
      (r) => r.flows.some((f) => f.process?.pod === 'scale/client-1'),
      5000,
    );
    const f = flows.flows.find((x) => x.process?.pod === 'scale/client-1');
    expect(f?.process?.pid).toBeGreaterThan(0);
  }, 30_000);

  it('etcd killed: agents keep enforcing, writes fail, acknowledged writes survive, agents catch up', async () => {
    // Acknowledged just before the crash: must be there after it.
    write(dir, '20-extra.yaml', [policy('client', 's1', 'extra')]);
    const acked = await cli(['apply', join(dir, '20-extra.yaml'), '--etcd', url, '--json']);
    expect(acked.code, acked.stderr).toBe(0);
    const ackedRevision = (JSON.parse(acked.stdout) as { revision: number }).revision;

    await killClusterEtcd(lab);
    const during = await reach(lab, (id) => id.startsWith('scale/s'));
    expect(during['client-1']).toEqual({ allowed: 9, denied: 0 });
    await waitFor(
      'agents to notice etcd is gone',
      () => status(lab, 'node-1'),
      (s) => s.sourceStats?.connected === false,
    );

    write(dir, '10-policy.yaml', [policy('nobody')]);
    const refused = await cli(['apply', join(dir, '10-policy.yaml'), '--etcd', url]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(url);

    await restartClusterEtcd(lab);
    const store = clusterStore(lab);
    try {
      const stored = await listObjects(store, { kind: 'NetworkPolicy', namespace: 'scale' });
      expect(stored.items.map((i) => i.ref.name).sort()).toEqual(['extra', 'servers']);
      expect(stored.items.find((i) => i.ref.name === 'extra')?.modRevision).toBe(ackedRevision);
    } finally {
      store.close();
    }
    const done = await clusterApply(lab, [join(dir, '10-policy.yaml')]);
    for (const n of ['node-1', 'node-2', 'node-3'])
      expect(Number((await status(lab, n)).revision)).toBeGreaterThanOrEqual(done.write.revision);
    const after = await reach(lab, shard('s2'));
    expect(after['client-1']).toEqual({ allowed: 0, denied: 3 });
    // `extra` still lets clients into shard s1.
    expect((await reach(lab, shard('s1')))['client-2']).toEqual({ allowed: 3, denied: 0 });
  }, 90_000);

  it('an agent killed: its dataplane keeps working; the next one resumes from its cache, or relists after compaction', async () => {
    const victim = labAgents(lab).find((a) => a.node === 'node-2');
    expect(victim).toBeDefined();
    process.kill(victim?.pid ?? 0, 'SIGKILL');
    await waitFor(
      'the agent to die',
      async () => labAgents(lab).some((a) => a.node === 'node-2'),
      (alive) => !alive,
    );
    expect((await reach(lab, shard('s2')))['client-1']).toEqual({ allowed: 0, denied: 3 });

    // A change while node-2 has no agent: the next agent resumes its watch from the cached revision.
    write(dir, '10-policy.yaml', [policy('client')]);
    const w1 = await clusterApply(lab, [join(dir, '10-policy.yaml')]);
    const resumed = await status(lab, 'node-2');
    expect(Number(resumed.revision)).toBeGreaterThanOrEqual(w1.write.revision);
    expect(resumed.sourceStats).toMatchObject({ resumes: 1, lists: 0, compactions: 0 });
    expect((await reach(lab, shard('s2')))['client-3']).toEqual({ allowed: 3, denied: 0 });

    // Again, but the history the cache would resume from is compacted away: a full relist.
    const again = labAgents(lab).find((a) => a.node === 'node-2');
    process.kill(again?.pid ?? 0, 'SIGKILL');
    await waitFor(
      'the agent to die',
      async () => labAgents(lab).some((a) => a.node === 'node-2'),
      (alive) => !alive,
    );
    write(dir, '10-policy.yaml', [policy('nobody')]);
    const store = clusterStore(lab);
    try {
      const { applyManifests } = await import('../../src/datastore/apply.js');
      await applyManifests(store, [join(dir, '10-policy.yaml')]);
      // One more write, so that the change above is history the compaction removes.
      await store.compact(await store.setCluster({ nodeCount: 3 }));
    } finally {
      store.close();
    }
    await clusterConverge(lab);
    const relisted = await status(lab, 'node-2');
    expect(relisted.sourceStats?.compactions).toBeGreaterThanOrEqual(1);
    expect(relisted.sourceStats?.lists).toBeGreaterThanOrEqual(1);
    expect((await reach(lab, shard('s2')))['client-3']).toEqual({ allowed: 0, denied: 3 });
  }, 90_000);

  it('a node cut off from etcd keeps its last state while the others move on, and converges after healing', async () => {
    await partitionNode(lab, 'node-2');
    try {
      write(dir, '10-policy.yaml', [policy('client')]);
      const w = await clusterApply(lab, [join(dir, '10-policy.yaml')]);
      expect(w.pending).toEqual(['node-2']);
      for (const n of ['node-1', 'node-3'])
        expect(Number((await status(lab, n)).revision)).toBeGreaterThanOrEqual(w.write.revision);
      // Shard s1 (node-1) and s3 (node-3) let clients in; s2 on the cut-off node still refuses them.
      expect((await reach(lab, shard('s1')))['client-2']).toEqual({ allowed: 3, denied: 0 });
      expect((await reach(lab, shard('s3')))['client-2']).toEqual({ allowed: 3, denied: 0 });
      expect((await reach(lab, shard('s2')))['client-1']).toEqual({ allowed: 0, denied: 3 });
      const cut = await status(lab, 'node-2');
      expect(Number(cut.revision)).toBeLessThan(w.write.revision);
      expect(cut.lastError).toBeUndefined();

      expect(await healNode(lab, 'node-2')).toBe(true);
      const healedAt = performance.now();
      await waitFor(
        'node-2 to catch up after healing',
        () => status(lab, 'node-2'),
        (s) => Number(s.revision) >= w.write.revision,
        20_000,
      );
      console.log(`node-2 caught up ${Math.round(performance.now() - healedAt)} ms after healing`);
      expect((await reach(lab, shard('s2')))['client-1']).toEqual({ allowed: 3, denied: 0 });
    } finally {
      await healNode(lab, 'node-2');
    }
  }, 90_000);
});
