/**
 * Traffic from outside the cluster (issue 20), in one real lab shared by every backend: outside
 * clients reach NodePort and LoadBalancer services through the nodes' external addresses, the way
 * a remote client reaches a NIC. For each backend: the right pods answer; Local keeps the client's
 * address and uses only the entry node's pods (a node without one does not serve); Cluster uses
 * any pod; a backend reaches its own service (hairpin); ports and services without endpoints are
 * refused, not timed out; ClientIP affinity holds and expires after its timeout; a NetworkPolicy
 * denying an outside client blocks it through the node port (policy sees the translated packet);
 * internalTrafficPolicy Local keeps a pod's connections on its own node. Where the backends differ
 * (the source a Cluster node port's local backend sees; how a node without a Local backend says
 * no) the test says which backend does what, and checks it against the oracle.
 *
 * The lab first comes up with ClusterIP services only (today's model) to check the outside's own
 * plumbing, then the exposed services are applied and each backend is switched in turn.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluateExternal, internalBackends } from '../../src/calc/outside.js';
import { converge, labDown, probeService, runOutside, type LabState } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { listNetns } from '../../src/netns/index.js';
import { describeKernel } from '../support/kernel.js';
import { modelOf, namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';

const LAB = `npo${process.pid % 10000}`;
const BACKENDS = ['iptables', 'nftables', 'ebpf'] as const;
/** Outside clients: `client` (always there) and `denied`, which the guard policy shuts out. */
const OUTSIDE = ['denied'];
/** Allocation is lowest-free in name order: client .2, denied .3 (checked in beforeAll). */
const CLIENT = '198.19.129.2';
const DENIED = '198.19.129.3';
const NODE_PORTS = { web: 30080, local: 30081, solo: 30082, guarded: 30083, sticky: 30084, empty: 30090 };
/** A node port no service has. */
const UNUSED_NODE_PORT = 30099;
const AFFINITY_TIMEOUT_S = 1;

const http = [{ name: 'http', containerPort: 8080 }];

/** Pods and ClusterIP services: what the model takes before NodePort and LoadBalancer exist. */
function clusterOnly(): Manifest[] {
  return [
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { node: 'node-1', labels: { role: 'client' } }),
    pod('x', 'b1', { node: 'node-1', labels: { app: 'web' }, ports: http }),
    pod('x', 'b2', { node: 'node-2', labels: { app: 'web' }, ports: http }),
    pod('x', 's1', { node: 'node-1', labels: { app: 'solo' }, ports: http }),
    pod('x', 'g1', { node: 'node-1', labels: { app: 'guarded' }, ports: http }),
    service('x', 'hair', { selector: { app: 'solo' }, ports: [{ port: 80, targetPort: 'http' }] }),
    service('x', 'web-internal', { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http' }] }),
    service('x', 'nothing', { selector: { app: 'none' }, ports: [{ port: 80, targetPort: 8080 }] }),
  ];
}

function exposed(
  name: string,
  selector: string,
  opts: {
    type?: 'NodePort' | 'LoadBalancer';
    nodePort?: number;
    local?: boolean;
    spec?: Record<string, unknown>;
  },
): Manifest {
  return service('x', name, {
    type: opts.type ?? 'NodePort',
    selector: { app: selector },
    ports: [{ port: 80, targetPort: 'http', ...(opts.nodePort ? { nodePort: opts.nodePort } : {}) }],
    ...(opts.local ? { externalTrafficPolicy: 'Local' } : {}),
    ...opts.spec,
  });
}

/** Everything: NodePort and LoadBalancer services, Local and Cluster, affinity, and the guard policy. */
function everything(): Manifest[] {
  return [
    ...clusterOnly(),
    exposed('web', 'web', { nodePort: NODE_PORTS.web }),
    exposed('web-local', 'web', { nodePort: NODE_PORTS.local, local: true }),
    exposed('solo', 'solo', { nodePort: NODE_PORTS.solo, local: true }),
    exposed('guarded', 'guarded', { nodePort: NODE_PORTS.guarded, local: true }),
    exposed('sticky', 'web', {
      nodePort: NODE_PORTS.sticky,
      spec: {
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: AFFINITY_TIMEOUT_S } },
      },
    }),
    exposed('empty', 'none', { nodePort: NODE_PORTS.empty }),
    exposed('lb', 'web', { type: 'LoadBalancer' }),
    exposed('lb-local', 'solo', { type: 'LoadBalancer', local: true }),
    service('x', 'near', {
      selector: { app: 'web' },
      ports: [{ port: 80, targetPort: 'http' }],
      internalTrafficPolicy: 'Local',
    }),
    service('x', 'solo-near', {
      selector: { app: 'solo' },
      ports: [{ port: 80, targetPort: 'http' }],
      internalTrafficPolicy: 'Local',
    }),
    networkPolicy('x', 'guard', {
      podSelector: { matchLabels: { app: 'guarded' } },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ ipBlock: { cidr: '198.19.129.0/24', except: [`${DENIED}/32`] } }] }],
    }),
  ];
}

async function up(manifests: Manifest[], backend?: (typeof BACKENDS)[number] | 'none'): Promise<LabState> {
  const r = await converge({
    name: LAB,
    model: modelOf(manifests),
    files: [],
    mode: 'up',
    outside: OUTSIDE,
    // The lab applies each backend once: no agents to start per switch.
    agents: false,
    ...(backend ? { backend } : {}),
  });
  return r.state;
}

function lbAddress(state: LabState, service: string): string {
  const a = state.ir.services.find((t) => t.service === `x/${service}`)?.loadBalancerIPs?.[0];
  if (!a) throw new Error(`service x/${service} has no load-balancer address in the lab's IR`);
  return a;
}

/**
 * `count` probes; the answering pods and the peer addresses they saw. A probe that should be
 * answered gets 3 s: on a loaded CI machine an answer can take longer than a second to arrive
 * after the handshake. Probes that must fail pass a short timeout of their own.
 */
async function probe(from: string, to: string, count = 40, timeoutMs = 3000) {
  return probeService(LAB, { from, to, count, timeoutMs, concurrency: 20 });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describeKernel('traffic from outside the cluster (lab, every backend)', () => {
  let state: LabState;
  let created = false;

  beforeAll(async () => {
    created = true;
    state = await up(clusterOnly(), 'none');
  }, 120_000);

  afterAll(async () => {
    if (!created) return;
    await labDown(LAB);
    expect(listNetns().filter((n) => n.startsWith(`sy-${LAB}-`))).toEqual([]);
  }, 120_000);

  describe('the outside', () => {
    it('has its clients at fixed addresses in their own namespaces, joined to the fabric', async () => {
      expect(state.topology?.outside?.map((o) => [o.name, o.address, o.netns])).toEqual([
        ['client', CLIENT, `sy-${LAB}-outside.client`],
        ['denied', DENIED, `sy-${LAB}-outside.denied`],
      ]);
      const r = await runOutside(LAB, 'client', ['ip', '-br', '-4', 'addr', 'show', 'dev', 'eth0']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`${CLIENT}/32`);
    });

    it("reaches every node's external address (a closed port is refused by the node itself)", async () => {
      for (const node of ['node-1', 'node-2']) {
        const r = await probe('outside:client', `nodeport/${node}:${UNUSED_NODE_PORT}`, 3);
        expect(r.errors).toEqual({ ECONNREFUSED: 3 });
      }
    }, 30_000);

    it('does not reach pod addresses: the cluster network is not routed to the outside', async () => {
      const b1 = state.topology?.pods.find((p) => p.id === 'x/b1')?.address;
      const r = await probe('outside:client', `${b1 ?? ''}:8080`, 3, 500);
      expect(r.failures).toBe(3);
    }, 30_000);

    it('reports the peer each backend saw: a pod calling a pod directly keeps its address', async () => {
      const a = state.topology?.pods.find((p) => p.id === 'x/a')?.address;
      const b2 = state.topology?.pods.find((p) => p.id === 'x/b2')?.address;
      const r = await probe('x/a', `${b2 ?? ''}:8080`, 5);
      expect(r.fromAddress).toBe(a);
      expect(r.peers).toEqual({ 'x/b2': { [a ?? '']: 5 } });
    }, 30_000);

    it('is recreated by lab up when a client namespace vanished', async () => {
      const { deleteNetns } = await import('../../src/netns/index.js');
      await deleteNetns([`sy-${LAB}-outside.denied`]);
      state = await up(clusterOnly());
      expect(listNetns()).toContain(`sy-${LAB}-outside.denied`);
      const r = await probe('outside:denied', `nodeport/node-2:${UNUSED_NODE_PORT}`, 2);
      expect(r.errors).toEqual({ ECONNREFUSED: 2 });
    }, 60_000);
  });

  describe.each(BACKENDS)('through %s', (backend) => {
    beforeAll(async () => {
      state = await up(everything(), backend);
      expect(readState(LAB)?.backend).toBe(backend);
    }, 120_000);

    it('NodePort (Cluster): any pod answers, through either node', async () => {
      for (const node of ['node-1', 'node-2']) {
        const r = await probe('outside:client', `nodeport/${node}:${NODE_PORTS.web}`);
        expect(r.failures, JSON.stringify(r.errors)).toBe(0);
        expect(Object.keys(r.answered).sort()).toEqual(['x/b1', 'x/b2']);
      }
    }, 60_000);

    it("NodePort (Cluster): a remote pod sees the entry node; a pod on the entry node sees what the oracle says this backend's convention gives", async () => {
      // kube-proxy (iptables, nftables) masquerades every Cluster connection; eBPF, like Cilium,
      // keeps the client's address when the backend is on the entry node (docs/services.md).
      const convention = backend === 'ebpf' ? 'client' : 'node';
      const entry = { kind: 'nodeport' as const, node: 'node-1', port: NODE_PORTS.web };
      const oracle = evaluateExternal(state.ir, CLIENT, entry, 'TCP', undefined, convention);
      const want = Object.fromEntries(oracle.paths.map((p) => [p.backend.endpoint, p.source]));
      const nodeAddress = state.ir.nodes.find((n) => n.name === 'node-1')?.address;
      expect(want).toEqual({ 'x/b1': convention === 'client' ? CLIENT : nodeAddress, 'x/b2': nodeAddress });
      const r = await probe('outside:client', `nodeport/node-1:${NODE_PORTS.web}`);
      expect(r.failures, JSON.stringify(r.errors)).toBe(0);
      for (const [pod, seen] of Object.entries(r.peers)) expect(Object.keys(seen), pod).toEqual([want[pod]]);
    }, 60_000);

    it("internalTrafficPolicy Local: a pod reaches only its own node's backends, as the oracle says", async () => {
      const table = state.ir.services.find((t) => t.service === 'x/near');
      if (!table) throw new Error('x/near is not in the IR');
      for (const [client, node] of [
        ['x/a', 'node-1'],
        ['x/b2', 'node-2'],
      ] as const) {
        const want = internalBackends(table, node).map((b) => b.endpoint);
        const r = await probe(client, 'svc/x/near:80', 20);
        expect(r.failures, JSON.stringify(r.errors)).toBe(0);
        expect(Object.keys(r.answered), `${client} on ${node}`).toEqual(want);
      }
    }, 60_000);

    it('internalTrafficPolicy Local: a pod on a node without a backend is not served (netfilter drops, eBPF refuses)', async () => {
      const table = state.ir.services.find((t) => t.service === 'x/solo-near');
      if (!table) throw new Error('x/solo-near is not in the IR');
      expect(internalBackends(table, 'node-2')).toEqual([]);
      const served = await probe('x/a', 'svc/x/solo-near:80', 5);
      expect(served.answered).toEqual({ 'x/s1': 5 });
      const r = await probe('x/b2', 'svc/x/solo-near:80', 3, 1000);
      expect(r.answered).toEqual({});
      // kube-proxy drops ("has no local endpoints"); a connect-time balancer can only fail the
      // connect, which it does as for a service without endpoints.
      expect(r.errors).toEqual(backend === 'ebpf' ? { ECONNREFUSED: 3 } : { timeout: 3 });
    }, 60_000);

    it("NodePort (Local): only the entry node's pods answer, and they see the client's address", async () => {
      for (const [node, pod] of [
        ['node-1', 'x/b1'],
        ['node-2', 'x/b2'],
      ] as const) {
        const r = await probe('outside:client', `nodeport/${node}:${NODE_PORTS.local}`, 20);
        expect(r.failures, JSON.stringify(r.errors)).toBe(0);
        expect(r.peers).toEqual({ [pod]: { [CLIENT]: 20 } });
      }
    }, 60_000);

    it('NodePort (Local): a node without a local pod does not serve it', async () => {
      const served = await probe('outside:client', `nodeport/node-1:${NODE_PORTS.solo}`, 5);
      expect(served.peers).toEqual({ 'x/s1': { [CLIENT]: 5 } });
      const r = await probe('outside:client', `nodeport/node-2:${NODE_PORTS.solo}`, 5, 500);
      expect(r.answered).toEqual({});
      expect(r.failures).toBe(5);
    }, 60_000);

    it('LoadBalancer (Cluster): the load-balancer address reaches any pod', async () => {
      const r = await probe('outside:client', `lb/${lbAddress(state, 'lb')}:80`);
      expect(r.failures, JSON.stringify(r.errors)).toBe(0);
      expect(Object.keys(r.answered).sort()).toEqual(['x/b1', 'x/b2']);
    }, 60_000);

    it('LoadBalancer (Local): routed only to nodes with a pod, which sees the client address', async () => {
      const r = await probe('outside:client', `lb/${lbAddress(state, 'lb-local')}:80`, 20);
      expect(r.failures, JSON.stringify(r.errors)).toBe(0);
      expect(r.peers).toEqual({ 'x/s1': { [CLIENT]: 20 } });
    }, 60_000);

    it('hairpin: a backend reaches its own service and lands on itself', async () => {
      const solo = await probe('x/s1', 'svc/x/hair:80', 10);
      expect(solo.failures, JSON.stringify(solo.errors)).toBe(0);
      expect(solo.answered).toEqual({ 'x/s1': 10 });
      const web = await probe('x/b1', 'svc/x/web-internal:80', 40);
      expect(web.failures, JSON.stringify(web.errors)).toBe(0);
      expect(Object.keys(web.answered)).toContain('x/b1');
    }, 60_000);

    it('refuses (does not time out) ports and services without endpoints', async () => {
      const refused = { ECONNREFUSED: 3 };
      const vip = state.ir.services.find((t) => t.service === 'x/web-internal')?.address ?? '';
      for (const [from, to] of [
        ['outside:client', `nodeport/node-1:${NODE_PORTS.empty}`],
        ['outside:client', `nodeport/node-2:${UNUSED_NODE_PORT}`],
        ['x/a', 'svc/x/nothing:80'],
        ['x/a', `${vip}:81`],
      ] as const) {
        const r = await probe(from, to, 3, 2000);
        expect(r.errors, `${from} → ${to}`).toEqual(refused);
      }
    }, 60_000);

    it('ClientIP affinity: one pod while the client keeps coming, any pod once the timeout passed', async () => {
      const to = `nodeport/node-1:${NODE_PORTS.sticky}`;
      const held = await probe('outside:client', to, 20);
      expect(held.failures, JSON.stringify(held.errors)).toBe(0);
      expect(Object.values(held.answered)).toEqual([20]);
      // Each round waits past the timeout: the next connection is balanced afresh. Ten rounds
      // over two pods all landing on one pod has a chance of 2^-9.
      const seen = new Set<string>();
      for (let i = 0; i < 10; i++) {
        await sleep(AFFINITY_TIMEOUT_S * 1000 + 500);
        const r = await probe('outside:client', to, 1);
        expect(r.failures, JSON.stringify(r.errors)).toBe(0);
        for (const pod of Object.keys(r.answered)) seen.add(pod);
      }
      expect([...seen].sort()).toEqual(['x/b1', 'x/b2']);
    }, 60_000);

    it('policy applies after translation: a NetworkPolicy denying an outside client blocks it through the node port', async () => {
      const allowed = await probe('outside:client', `nodeport/node-1:${NODE_PORTS.guarded}`, 5);
      expect(allowed.peers).toEqual({ 'x/g1': { [CLIENT]: 5 } });
      const denied = await probe('outside:denied', `nodeport/node-1:${NODE_PORTS.guarded}`, 5, 500);
      expect(denied.fromAddress).toBe(DENIED);
      // Policy drops silently: a time-out, not a refusal.
      expect(denied.errors).toEqual({ timeout: 5 });
    }, 60_000);
  });
});
