/**
 * ClusterIP services through the netfilter backends, in a real lab: x/a probes a service over
 * three backend pods (one with a different number behind the named targetPort) with `lab probe`'s
 * library. Spread (chi-square), ClientIP affinity, UDP, rejected ports, a backend leaving while
 * one of its connections stays open, one endpoint change applied incrementally, and policy on
 * the real backend address.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, probeService, type LabState } from '../../src/lab/index.js';
import { openListeners, startConnects } from '../../src/netns/index.js';
import { describeKernel } from '../support/kernel.js';
import { modelOf, namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';

/** Chi-square critical value for df = 2 at p = 0.001. */
const CHI2_CRITICAL_DF2 = 13.8155;
const HOLD_PORT = 9000;
const BACKENDS = ['x/b1', 'x/b2', 'x/b3'];

function chiSquare(observed: readonly number[], total: number): number {
  const expected = total / observed.length;
  return observed.reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
}

function manifests(opts: { b2Label?: string; policy?: 'allow' | 'deny' } = {}): Manifest[] {
  const webPorts = (http: number) => [
    { name: 'http', containerPort: http },
    { name: 'dns', containerPort: 5353, protocol: 'UDP' as const },
  ];
  const out: Manifest[] = [
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { role: 'client' } }),
    pod('x', 'b1', { labels: { app: 'web' }, ports: webPorts(8080) }),
    pod('x', 'b2', { labels: { app: opts.b2Label ?? 'web' }, ports: webPorts(8080) }),
    // Same port name, another number: the service's named targetPort resolves per pod.
    pod('x', 'b3', { labels: { app: 'web' }, ports: webPorts(8081) }),
    service('x', 'web', {
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 'http' },
        { name: 'dns', port: 53, targetPort: 'dns', protocol: 'UDP' },
        { name: 'hold', port: HOLD_PORT, targetPort: HOLD_PORT },
      ],
    }),
    service('x', 'sticky', {
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      ports: [{ port: 81, targetPort: 'http' }],
    }),
    service('x', 'empty', { selector: { app: 'nothing' }, ports: [{ port: 80, targetPort: 8080 }] }),
  ];
  if (opts.policy) {
    out.push(
      networkPolicy('x', 'web-ingress', {
        podSelector: { matchLabels: { app: 'web' } },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [{ podSelector: { matchLabels: { role: opts.policy === 'allow' ? 'client' : 'other' } } }],
            // The backend's port, not the service's: policy sees the packet after DNAT.
            ports: [{ port: 'http' }],
          },
        ],
      }),
    );
  }
  return out;
}

/** A server on HOLD_PORT in every backend that answers each line with the pod's id, and stays open. */
function holdServers(state: LabState): () => void {
  const closers: (() => void)[] = [];
  for (const p of state.topology?.pods ?? []) {
    if (!BACKENDS.includes(p.id)) continue;
    const [fd] = openListeners(p.netns, [{ port: HOLD_PORT, protocol: 'TCP' }]);
    const server = net.createServer((conn) => {
      conn.on('error', () => undefined);
      conn.on('data', () => conn.write(`${p.id}\n`));
    });
    server.listen({ fd: fd as number });
    closers.push(() => server.close());
  }
  return () => closers.forEach((c) => c());
}

function ask(sock: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer on the held connection')), 2000);
    sock.once('data', (d: Buffer) => {
      clearTimeout(timer);
      resolve(d.toString('utf8').trim());
    });
    sock.once('error', reject);
    sock.write('ping\n');
  });
}

async function holdConnection(state: LabState, address: string): Promise<net.Socket> {
  const a = state.topology?.pods.find((p) => p.id === 'x/a');
  if (!a) throw new Error('no x/a');
  const [c] = startConnects(a.netns, [{ address, port: HOLD_PORT, protocol: 'TCP' }]);
  if (!c || 'error' in c) throw new Error(`connect: ${c && 'error' in c ? c.error : '?'}`);
  const sock = new net.Socket({ fd: c.fd, readable: true, writable: true });
  sock.on('error', () => undefined);
  return sock;
}

function withoutBackend(ir: IR, tableId: string, endpoint: string): IR {
  return {
    ...ir,
    services: ir.services.map((t) =>
      t.id === tableId ? { ...t, backends: t.backends.filter((b) => b.endpoint !== endpoint) } : t,
    ),
  };
}

for (const backendName of ['iptables', 'nftables'] as const) {
  describeKernel(`services through ${backendName} (lab)`, () => {
    const LAB = `svc${backendName.slice(0, 3)}${process.pid % 10000}`;
    let state: LabState;
    let vip = '';
    let up = false;
    let stopHold: () => void = () => undefined;

    async function apply(m: Manifest[], mode: 'up' | 'apply' = 'apply'): Promise<LabState> {
      const r = await converge({
        name: LAB,
        model: modelOf(m),
        files: [],
        mode,
        // The tests also drive the backend directly; an agent would repair what they change.
        ...(mode === 'up' ? { backend: backendName, agents: false } : {}),
      });
      up = true;
      state = r.state;
      return state;
    }

    beforeAll(async () => {
      await apply(manifests(), 'up');
      vip = state.ir.services.find((t) => t.service === 'x/web')?.address ?? '';
      stopHold = holdServers(state);
    }, 60_000);

    afterAll(async () => {
      stopHold();
      if (up) await labDown(LAB);
    }, 60_000);

    it('resolves the named targetPort per backend pod', () => {
      const web = state.ir.services.find((t) => t.id === 'x/web:80/TCP');
      expect(Object.fromEntries((web?.backends ?? []).map((b) => [b.endpoint, b.port]))).toEqual({
        'x/b1': 8080,
        'x/b2': 8080,
        'x/b3': 8081,
      });
    });

    it('spreads 3000 new connections uniformly over the 3 backends', async () => {
      const r = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 3000 });
      expect(r.failures).toBe(0);
      expect(Object.keys(r.answered).sort()).toEqual(BACKENDS);
      const chi2 = chiSquare(
        BACKENDS.map((b) => r.answered[b] ?? 0),
        r.count,
      );
      console.log(
        `${backendName}: spread ${JSON.stringify(r.answered)} chi2=${chi2.toFixed(3)} ` +
          `rate=${r.rate}/s latency=${JSON.stringify(r.latencyMs)}`,
      );
      expect(chi2).toBeLessThan(CHI2_CRITICAL_DF2);
    }, 60_000);

    it('keeps every connection of one client on one backend with ClientIP affinity', async () => {
      const r = await probeService(LAB, { from: 'x/a', to: 'svc/x/sticky:81', count: 200 });
      expect(r.failures).toBe(0);
      expect(Object.values(r.answered)).toEqual([200]);
    }, 30_000);

    it('carries UDP both ways through the service', async () => {
      const r = await probeService(LAB, {
        from: 'x/a',
        to: 'svc/x/web:53',
        protocol: 'UDP',
        count: 300,
      });
      expect(r.failures).toBe(0);
      expect(Object.keys(r.answered).sort()).toEqual(BACKENDS);
    }, 30_000);

    it('refuses ports the service does not define, and a service without backends', async () => {
      const undefinedPort = await probeService(LAB, {
        from: 'x/a',
        to: `${vip}:12345`,
        count: 5,
        timeoutMs: 500,
      });
      expect(undefinedPort.answered).toEqual({});
      expect(undefinedPort.failures).toBe(5);
      const udp = await probeService(LAB, {
        from: 'x/a',
        to: `${vip}:12345`,
        protocol: 'UDP',
        count: 5,
        timeoutMs: 500,
      });
      expect(udp.answered).toEqual({});
      const empty = await probeService(LAB, { from: 'x/a', to: 'svc/x/empty:80', count: 5, timeoutMs: 500 });
      expect(empty.answered).toEqual({});
      expect(empty.failures).toBe(5);
      // Rejected explicitly (a reset): nftables before NAT; iptables in the filter table, which
      // these packets reach because the backend routes service addresses locally in the node.
      expect(undefinedPort.errors).toEqual({ ECONNREFUSED: 5 });
      expect(empty.errors).toEqual({ ECONNREFUSED: 5 });
      console.log(
        `${backendName}: undefined port ${JSON.stringify(undefinedPort.errors)}, udp ${JSON.stringify(udp.errors)}, ` +
          `no endpoints ${JSON.stringify(empty.errors)}`,
      );
    }, 30_000);

    it('applies one endpoint change incrementally, touching only that service', async () => {
      const backend: Backend = await loadBackend(backendName);
      const before = state.backendIR ?? state.ir;
      const after = withoutBackend(before, 'x/web:80/TCP', 'x/b1');
      const node = state.topology?.nodes[0];
      if (!node) throw new Error('no node');
      const target = { scope: LAB, node: node.name, netns: node.netns };
      const r = await backend.apply(target, after, before);
      console.log(
        `${backendName}: one endpoint change in ${r.durationMs.toFixed(1)} ms: ${r.changed.join(', ')}`,
      );
      expect(r.changed.length).toBeGreaterThan(0);
      // Only NAT objects of that one service port: its chain and the leaving backend's chain.
      for (const c of r.changed) expect(c).toMatch(/SY-SVC-|SY-SEP-|chain:svc-|chain:sep-/);
      const back = await backend.apply(target, before, after);
      expect(back.changed.length).toBeGreaterThan(0);
    }, 30_000);

    it('sends no new connections to a backend that left, while its open connection keeps working', async () => {
      // Find a held connection, then take its backend out of the service by relabelling the pod.
      const sock = await holdConnection(state, vip);
      const first = await ask(sock);
      expect(BACKENDS).toContain(first);
      const pods = { 'x/b1': 'b1', 'x/b2': 'b2', 'x/b3': 'b3' } as const;
      const leaving = first as keyof typeof pods;
      const relabelled = manifests().map((m) => {
        const meta = m.metadata as { name: string; namespace?: string; labels?: Record<string, string> };
        return m.kind === 'Pod' && meta.namespace === 'x' && meta.name === pods[leaving]
          ? { ...m, metadata: { ...meta, labels: { app: 'retired' } } }
          : m;
      });
      await apply(relabelled);
      const r = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 300 });
      expect(r.failures).toBe(0);
      expect(r.answered[leaving]).toBeUndefined();
      expect(Object.keys(r.answered)).toHaveLength(2);
      // The connection established before the change is still DNATed to the retired pod.
      expect(await ask(sock)).toBe(leaving);
      sock.destroy();
      await apply(manifests());
      const again = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 300 });
      expect(Object.keys(again.answered).sort()).toEqual(BACKENDS);
    }, 60_000);

    it('applies policy to the backend behind the service address', async () => {
      await apply(manifests({ policy: 'allow' }));
      const allowed = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 100 });
      expect(allowed.failures).toBe(0);
      expect(Object.keys(allowed.answered).sort()).toEqual(BACKENDS);
      await apply(manifests({ policy: 'deny' }));
      const denied = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 30, timeoutMs: 300 });
      expect(denied.answered).toEqual({});
      expect(denied.failures).toBe(30);
    }, 60_000);
  });
}

describe('chi-square helper', () => {
  it('is zero for a perfect spread and grows with skew', () => {
    expect(chiSquare([1000, 1000, 1000], 3000)).toBe(0);
    expect(chiSquare([1100, 1000, 900], 3000)).toBeCloseTo(20, 5);
  });
});
