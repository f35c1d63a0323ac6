/**
 * Traffic from outside through the netfilter backends, in a real two-node lab: an outside client
 * namespace on the lab's fabric (as a NIC would bring it in) reaches NodePorts on the nodes'
 * external addresses and a load-balancer address. The IR's issue-20 fields are written by the
 * test (support/expose.ts) and applied with the backend directly. Servers in the backend pods
 * answer with the pod and the peer address they see, so source-address preservation is checked
 * where it matters: in the backend.
 *
 *   node-1: x/a (client pod), x/b1      node-2: x/b2
 *   x/web     NodePort 30080, Cluster    → b1, b2
 *   x/local   NodePort 30081, Local, LB  → b1, b2
 *   x/solo    NodePort 30082, Local      → b2 only (node-1 has none: drops)
 *   x/self    ClusterIP                  → b1 only (hairpin from b1)
 *   x/empty   NodePort 30083             → nothing (refused)
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Backend } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { openListeners, startConnects } from '../../src/netns/index.js';
import { exposeIR, type ExposedFields } from '../support/expose.js';
import { describeKernel } from '../support/kernel.js';
import { modelOf, namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';

const PORT = 9090;
const CLIENT = '198.19.129.1';
const LB_IP = '198.19.192.7';
const EXTERNAL: Record<string, string> = { 'node-1': '198.19.128.1', 'node-2': '198.19.128.2' };
const FIELDS: Record<string, ExposedFields> = {
  'x/web:80/TCP': { nodePort: 30080 },
  'x/local:80/TCP': { nodePort: 30081, externalTrafficPolicy: 'Local', loadBalancerIPs: [LB_IP] },
  'x/solo:80/TCP': { nodePort: 30082, externalTrafficPolicy: 'Local' },
  'x/empty:80/TCP': { nodePort: 30083 },
};

function manifests(policy?: 'pods-only' | 'outside-allowed'): Manifest[] {
  const backend = (name: string, node: string, labels: Record<string, string>): Manifest =>
    pod('x', name, { labels, node });
  const svc = (name: string, selector: Record<string, string>): Manifest =>
    service('x', name, { selector, ports: [{ port: 80, targetPort: PORT }] });
  const out = [
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { role: 'client' }, node: 'node-1' }),
    backend('b1', 'node-1', { app: 'web', b1: 'yes' }),
    backend('b2', 'node-2', { app: 'web', b2: 'yes' }),
    svc('web', { app: 'web' }),
    svc('local', { app: 'web' }),
    svc('solo', { b2: 'yes' }),
    svc('self', { b1: 'yes' }),
    svc('empty', { app: 'nothing' }),
  ];
  if (policy)
    out.push(
      networkPolicy('x', 'web-ingress', {
        podSelector: { matchLabels: { app: 'web' } },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [
              { podSelector: {} },
              ...(policy === 'outside-allowed' ? [{ ipBlock: { cidr: `${CLIENT}/32` } }] : []),
            ],
          },
        ],
      }),
    );
  return out;
}

function sh(netns: string, ...args: string[]): void {
  execFileSync('ip', ['-n', netns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

interface Answer {
  pod?: string;
  peer?: string;
  error?: string;
}

/** One TCP connection from `netns`: the backend's answer (`<pod> <peer address>`) or the error. */
function ask(netns: string, address: string, port: number, timeoutMs = 1500): Promise<Answer> {
  const [c] = startConnects(netns, [{ address, port, protocol: 'TCP' }]);
  if (!c || 'error' in c) return Promise.resolve({ error: c && 'error' in c ? c.error : 'no socket' });
  return new Promise((resolve) => {
    const sock = new net.Socket({ fd: c.fd, readable: true, writable: true });
    let text = '';
    const done = (a: Answer): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => done({ error: 'timeout' }), timeoutMs);
    sock.on('data', (d: Buffer) => {
      text += d.toString('utf8');
      const [podId, peer] = text.trim().split(' ');
      if (text.includes('\n')) done({ pod: podId ?? '', peer: peer ?? '' });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => done({ error: e.code ?? e.message }));
    sock.write('?\n');
  });
}

async function askMany(netns: string, address: string, port: number, n: number): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < n; i++) out.push(await ask(netns, address, port));
  return out;
}

const pods = (answers: readonly Answer[]): string[] =>
  [...new Set(answers.map((a) => a.pod ?? a.error ?? '?'))].sort();
const peers = (answers: readonly Answer[]): string[] =>
  [...new Set(answers.map((a) => a.peer ?? '-'))].sort();

for (const backendName of ['iptables', 'nftables'] as const) {
  describeKernel(`NodePort and LoadBalancer through ${backendName} (lab)`, () => {
    const LAB = `np${backendName.slice(0, 2)}${process.pid % 10000}`;
    const OUT = `sy-${LAB}-outside`;
    const OUT_LINK = `o${process.pid % 100000}`;
    let state: LabState;
    let backend: Backend;
    let applied: IR | undefined;
    let up = false;
    const closers: (() => void)[] = [];

    const nodeNetns = (node: string): string => {
      const n = state.topology?.nodes.find((x) => x.name === node);
      if (!n) throw new Error(`no ${node}`);
      return n.netns;
    };
    const podNetns = (id: string): string => {
      const p = state.topology?.pods.find((x) => x.id === id);
      if (!p) throw new Error(`no ${id}`);
      return p.netns;
    };
    const vip = (name: string): string =>
      state.ir.services.find((t) => t.service === `x/${name}`)?.address ?? '';

    /**
     * The lab builds namespaces and links only (backend `none`); the test applies the exposed IR
     * on every node itself, incrementally from what it applied before.
     */
    async function apply(m: Manifest[], mode: 'up' | 'apply' = 'apply'): Promise<void> {
      const r = await converge({
        name: LAB,
        model: modelOf(m),
        files: [],
        mode,
        nodeCount: 2,
        ...(mode === 'up' ? { backend: 'none', agents: false } : {}),
      });
      up = true;
      state = r.state;
      const exposed = exposeIR(state.ir, EXTERNAL, FIELDS);
      for (const n of state.topology?.nodes ?? [])
        await backend.apply({ scope: LAB, node: n.name, netns: n.netns }, exposed, applied);
      applied = exposed;
    }

    beforeAll(async () => {
      backend = await loadBackend(backendName);
      await apply(manifests(), 'up');
      // The outside: a client namespace on the fabric bridge, on-link with the nodes' external
      // addresses; the load-balancer address is routed to node-1.
      const fabric = state.topology?.fabricNetns as string;
      execFileSync('ip', ['netns', 'add', OUT]);
      sh(fabric, 'link', 'add', OUT_LINK, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', OUT);
      sh(fabric, 'link', 'set', OUT_LINK, 'master', 'br0', 'up');
      sh(OUT, 'link', 'set', 'lo', 'up');
      sh(OUT, 'link', 'set', 'eth0', 'up');
      sh(OUT, 'addr', 'add', `${CLIENT}/24`, 'dev', 'eth0');
      sh(OUT, 'route', 'add', '198.19.128.0/24', 'dev', 'eth0');
      sh(OUT, 'route', 'add', `${LB_IP}/32`, 'via', EXTERNAL['node-1'] as string, 'dev', 'eth0');
      for (const [node, address] of Object.entries(EXTERNAL)) {
        // The lab gives nodes their external address already; this client is on-link with them.
        sh(nodeNetns(node), 'addr', 'replace', `${address}/24`, 'dev', 'fabric0');
        sh(nodeNetns(node), 'route', 'replace', '198.19.129.0/24', 'dev', 'fabric0');
      }
      // Backends answer with who they are and whom they see.
      for (const id of ['x/b1', 'x/b2']) {
        const [fd] = openListeners(podNetns(id), [{ port: PORT, protocol: 'TCP' }]);
        const server = net.createServer((conn) => {
          conn.on('error', () => undefined);
          conn.end(`${id} ${conn.remoteAddress?.replace(/^::ffff:/, '') ?? '?'}\n`);
        });
        server.listen({ fd: fd as number });
        closers.push(() => server.close());
      }
    }, 90_000);

    afterAll(async () => {
      for (const c of closers) c();
      try {
        execFileSync('ip', ['netns', 'del', OUT], { stdio: 'ignore' });
      } catch {
        // Never created.
      }
      if (up) await labDown(LAB);
    }, 60_000);

    it('reaches every backend through a Cluster NodePort on either node, masqueraded to the node', async () => {
      for (const node of ['node-1', 'node-2']) {
        const answers = await askMany(OUT, EXTERNAL[node] as string, 30080, 40);
        expect(pods(answers)).toEqual(['x/b1', 'x/b2']);
        // Replies must come back through the node the client reached: the backend sees a node.
        expect(peers(answers).every((p) => p.startsWith('198.18.255.'))).toBe(true);
      }
    }, 60_000);

    it("keeps the client address under Local and answers only from the entry node's backend", async () => {
      const one = await askMany(OUT, EXTERNAL['node-1'] as string, 30081, 20);
      expect(pods(one)).toEqual(['x/b1']);
      expect(peers(one)).toEqual([CLIENT]);
      const two = await askMany(OUT, EXTERNAL['node-2'] as string, 30081, 20);
      expect(pods(two)).toEqual(['x/b2']);
      expect(peers(two)).toEqual([CLIENT]);
    }, 60_000);

    it('reaches a load-balancer address (routed to node-1, Local: b1, client address kept)', async () => {
      const answers = await askMany(OUT, LB_IP, 80, 20);
      expect(pods(answers)).toEqual(['x/b1']);
      expect(peers(answers)).toEqual([CLIENT]);
    }, 30_000);

    it('drops Local traffic on a node without a local backend, and serves it where there is one', async () => {
      const none = await ask(OUT, EXTERNAL['node-1'] as string, 30082, 700);
      expect(none.error).toBe('timeout');
      const there = await ask(OUT, EXTERNAL['node-2'] as string, 30082);
      expect(there).toEqual({ pod: 'x/b2', peer: CLIENT });
    }, 30_000);

    it('refuses a NodePort, a VIP port and an undefined VIP port without backends (no time-out)', async () => {
      expect((await ask(OUT, EXTERNAL['node-1'] as string, 30083)).error).toBe('ECONNREFUSED');
      expect((await ask(podNetns('x/a'), vip('empty'), 80)).error).toBe('ECONNREFUSED');
      expect((await ask(podNetns('x/a'), vip('web'), 12345)).error).toBe('ECONNREFUSED');
      expect((await ask(OUT, LB_IP, 12345)).error).toBe('ECONNREFUSED');
    }, 30_000);

    it('lets a backend reach itself through its own service (hairpin)', async () => {
      const answers = await askMany(podNetns('x/b1'), vip('self'), 80, 5);
      expect(pods(answers)).toEqual(['x/b1']);
      // Masqueraded: the pod cannot accept its own address as a source.
      expect(peers(answers).every((p) => p.startsWith('198.18.255.'))).toBe(true);
    }, 30_000);

    it('applies policy to the translated packet: a policy admitting only pods blocks the outside client', async () => {
      await apply(manifests('pods-only'));
      expect((await ask(OUT, EXTERNAL['node-1'] as string, 30081, 700)).error).toBe('timeout');
      // Pods still reach the same backend through the service.
      expect((await ask(podNetns('x/a'), vip('local'), 80)).pod).toMatch(/^x\/b[12]$/);
      await apply(manifests('outside-allowed'));
      expect(await ask(OUT, EXTERNAL['node-1'] as string, 30081)).toEqual({ pod: 'x/b1', peer: CLIENT });
      await apply(manifests());
    }, 60_000);

    it('sees a changed node port or route in the fingerprint, and a repair puts it back', async () => {
      const node = state.topology?.nodes.find((n) => n.name === 'node-1');
      if (!node || !applied) throw new Error('no node-1');
      const target = { scope: LAB, node: node.name, netns: node.netns };
      // What the agent's repair does: a full apply without a previous IR. Its result is the
      // reference. (iptables: the rules and routes part; a full apply swaps every ipset, which
      // gives each a new hash seed in its header.)
      const fingerprint = async (): Promise<string> => {
        const f = await backend.fingerprint(target);
        return backendName === 'iptables' ? (f.split('.')[0] as string) : f;
      };
      // The reference is what a full apply leaves (the repair below is one).
      backend.dropShadow(target);
      await backend.apply(target, applied);
      const reference = await fingerprint();
      if (backendName === 'iptables') {
        // The local route that makes an undefined port of the load-balancer address refused.
        sh(node.netns, 'route', 'del', 'local', `${LB_IP}/32`, 'dev', 'lo', 'table', 'local');
        expect((await ask(OUT, LB_IP, 12345, 700)).error).not.toBe('ECONNREFUSED');
      } else {
        execFileSync('ip', [
          'netns',
          'exec',
          node.netns,
          'nft',
          'delete',
          'element',
          'inet',
          'switchyard',
          'nodeports',
          `{ ${EXTERNAL['node-1']} . tcp . 30080 }`,
        ]);
        expect((await ask(OUT, EXTERNAL['node-1'] as string, 30080)).pod).toBeUndefined();
      }
      expect(await fingerprint()).not.toBe(reference);
      // A repair as the agent does it: what the backend wrote last is no longer what the kernel holds.
      backend.dropShadow(target);
      await backend.apply(target, applied);
      expect(await fingerprint()).toBe(reference);
      expect((await ask(OUT, EXTERNAL['node-1'] as string, 30080)).pod).toMatch(/^x\/b[12]$/);
      expect((await ask(OUT, LB_IP, 12345)).error).toBe('ECONNREFUSED');
    }, 30_000);
  });
}
