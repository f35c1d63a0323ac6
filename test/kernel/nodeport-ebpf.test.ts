/**
 * The eBPF node-port load balancer with real packets: a two-node lab (backends s/b1 on alpha,
 * s/b2 on beta), an outside client namespace on the lab's fabric bridge, and IRs with the
 * node-port fields written by hand (the node external addresses are added to each node's fabric
 * interface here, as the lab does for its outside). What the client and the backends see:
 * which backend answered and the peer address it saw, refusals, affinity, and policy.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import { ebpfBackend } from '../../src/dataplane/ebpf/index.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { ebpfFingerprint, prepareEbpfRepair } from '../../src/dataplane/ebpf/fingerprint.js';
import { BpfMap, Link } from '../../src/bpf/index.js';
import { npSvcKey } from '../../src/dataplane/ebpf/nodeport-layout.js';
import { svcValue } from '../../src/dataplane/ebpf/services-layout.js';
import type { IR, ServicePortTable } from '../../src/ir/types.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { spawnInNetns } from '../../src/netns/index.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';
import { manifestFile } from './lab-harness.js';
import { NetnsProcess, sleep } from './bpf-lab.js';

const LAB = `npe${process.pid % 10000}`;
const OUTSIDE = `sy-${LAB}-out`;
const CLIENT = '198.19.128.200';
const EXTERNAL: Record<string, string> = { alpha: '198.19.128.1', beta: '198.19.128.2' };
const LB = '198.19.192.10';
const LB_EMPTY = '198.19.192.11';
const NODE_PORT = 30080;
const STICKY_PORT = 30082;
const EMPTY_PORT = 30081;

/** A Node ES module run inside a namespace of this test; args arrive as JSON in argv. */
function nodeIn(netns: string, script: string, args: unknown): NetnsProcess {
  const argv = [
    'netns',
    'exec',
    netns,
    process.execPath,
    '--input-type=module',
    '-e',
    script,
    JSON.stringify(args),
  ];
  return new NetnsProcess(spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
}

function ip(netns: string, ...args: string[]): void {
  execFileSync('ip', ['-n', netns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function manifests(policy = false): Manifest[] {
  const web = (name: string, node: string, address: string): Manifest =>
    pod('s', name, {
      labels: { app: 'web' },
      node,
      ip: address,
      ports: [
        { containerPort: 7000, protocol: 'TCP' },
        { containerPort: 7001, protocol: 'UDP' },
      ],
    });
  const out: Manifest[] = [
    namespace('x', { ns: 'x' }),
    namespace('s', { ns: 's' }),
    pod('x', 'a', { labels: { role: 'client' }, node: 'alpha' }),
    web('b1', 'alpha', '198.18.40.11'),
    web('b2', 'beta', '198.18.40.12'),
    service('s', 'web', {
      selector: { app: 'web' },
      ports: [
        { name: 'tcp', port: 80, targetPort: 7100, protocol: 'TCP' },
        { name: 'udp', port: 81, targetPort: 7101, protocol: 'UDP' },
      ],
    }),
    service('s', 'sticky', {
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      ports: [{ port: 80, targetPort: 7100, protocol: 'TCP' }],
    }),
    service('s', 'empty', { selector: { app: 'none' }, ports: [{ port: 80, targetPort: 7100 }] }),
  ];
  if (policy)
    out.push(
      networkPolicy('s', 'only-x', {
        podSelector: { matchLabels: { app: 'web' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'x' } } }] }],
      }),
    );
  return out;
}

type Policy = 'Cluster' | 'Local';

/** The lab's IR with the node-port fields the model would add (np-model), written here by hand. */
function withNodePorts(ir: IR, opts: { policy?: Policy; stickySeconds?: number } = {}): IR {
  const nodeOf = new Map(ir.endpoints.map((e) => [e.id, e.node]));
  const outside = (t: ServicePortTable): Partial<ServicePortTable> => {
    if (t.service === 's/web' && t.protocol === 'TCP')
      return { nodePort: NODE_PORT, loadBalancerIPs: [LB], externalTrafficPolicy: opts.policy ?? 'Cluster' };
    if (t.service === 's/web') return { nodePort: NODE_PORT, loadBalancerIPs: [LB] };
    if (t.service === 's/sticky')
      return {
        nodePort: STICKY_PORT,
        affinity: { mode: 'ClientIP', timeoutSeconds: opts.stickySeconds ?? 10800 },
      };
    if (t.service === 's/empty') return { nodePort: EMPTY_PORT, loadBalancerIPs: [LB_EMPTY] };
    return {};
  };
  return {
    ...ir,
    nodes: ir.nodes.map((n) => ({ ...n, externalAddress: EXTERNAL[n.name] })),
    services: ir.services.map((t) => ({
      ...t,
      backends: t.backends.map((b) => ({ ...b, node: nodeOf.get(b.endpoint) })),
      ...outside(t),
    })),
  };
}

/** `<pod> <peer address>` for each TCP connection on 7100 and each UDP datagram on 7101. */
const SERVER = `
import dgram from 'node:dgram';
import net from 'node:net';
const { id } = JSON.parse(process.argv.at(-1));
net.createServer((c) => { c.on('error', () => undefined); c.end(id + ' ' + c.remoteAddress + '\\n'); }).listen(7100, '0.0.0.0');
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(id + ' ' + r.address, r.port, r.address));
u.bind(7101, () => console.log('ready'));
`;

/** \`count\` connections one after the other; prints [{ok, answer} | {ok: false, error}]. */
const CLIENT_SCRIPT = `
import dgram from 'node:dgram';
import net from 'node:net';
const { host, port, count, udp, timeoutMs, pauseMs } = JSON.parse(process.argv.at(-1));
const once = () => new Promise((resolve) => {
  const timer = setTimeout(() => { done({ ok: false, error: 'timeout' }); }, timeoutMs);
  let s;
  const done = (r) => { clearTimeout(timer); try { udp ? s.close() : s.destroy(); } catch {} resolve(r); };
  if (udp) {
    s = dgram.createSocket('udp4');
    s.on('error', (e) => done({ ok: false, error: e.code }));
    s.on('message', (m) => done({ ok: true, answer: m.toString().trim() }));
    s.send('x', port, host);
  } else {
    let buf = '';
    s = net.connect({ host, port });
    s.on('error', (e) => done({ ok: false, error: e.code }));
    s.on('data', (d) => (buf += d));
    s.on('end', () => done({ ok: true, answer: buf.trim() }));
  }
});
const out = [];
for (let i = 0; i < count; i++) {
  out.push(await once());
  if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
}
console.log(JSON.stringify(out));
`;

interface Answer {
  ok: boolean;
  answer?: string;
  error?: string;
}

describeKernel('ebpf: node ports and load-balancer addresses from outside', () => {
  let state: LabState;
  const servers: NetnsProcess[] = [];

  const targets = (): NodeTarget[] =>
    (state.topology?.nodes ?? []).map((n) => ({ scope: LAB, node: n.name, netns: n.netns }));
  const netnsOfNode = (name: string): string => {
    const n = state.topology?.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n.netns;
  };

  async function converged(policy = false): Promise<IR> {
    const files = [manifestFile(manifests(policy))];
    const result = await converge({
      name: LAB,
      model: loadManifests(files),
      files,
      mode: state ? 'apply' : 'up',
      backend: 'ebpf',
      agents: false,
    });
    state = result.state;
    return state.ir;
  }

  async function applyAll(ir: IR): Promise<string[]> {
    const changed: string[] = [];
    for (const t of targets()) changed.push(...(await ebpfBackend.apply(t, ir)).changed);
    return changed;
  }

  async function fromOutside(
    host: string,
    port: number,
    count: number,
    opts: { udp?: boolean; timeoutMs?: number; pauseMs?: number } = {},
  ): Promise<Answer[]> {
    const p = nodeIn(OUTSIDE, CLIENT_SCRIPT, {
      host,
      port,
      count,
      udp: opts.udp ?? false,
      timeoutMs: opts.timeoutMs ?? 1500,
      pauseMs: opts.pauseMs ?? 0,
    });
    return p.result<Answer[]>(60_000);
  }

  /** The client script from inside pod `id` (its namespace and cgroup: the connect-time hooks run). */
  async function fromPod(id: string, host: string, port: number, count: number): Promise<Answer[]> {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    const args = { host, port, count, udp: false, timeoutMs: 1500, pauseMs: 0 };
    const child = spawnInNetns({
      netns: p.netns,
      cgroup: join(state.cgroupRoot, p.slug),
      argv: [process.execPath, '--input-type=module', '-e', CLIENT_SCRIPT, JSON.stringify(args)],
      via: 'ip-netns-exec',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new NetnsProcess(child).result<Answer[]>(60_000);
  }

  /** pod id → peer addresses it saw, for the answers that came back. */
  function seen(answers: Answer[]): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const a of answers) {
      if (!a.ok || !a.answer) continue;
      const [who = '', peer = ''] = a.answer.split(' ');
      const peers = (out[who] ??= []);
      if (!peers.includes(peer)) peers.push(peer);
    }
    return out;
  }

  beforeAll(async () => {
    await converged();
    const fabric = state.topology?.fabricNetns as string;
    if (existsSync(`/run/netns/${OUTSIDE}`)) execFileSync('ip', ['netns', 'del', OUTSIDE]);
    execFileSync('ip', ['netns', 'add', OUTSIDE]);
    ip(OUTSIDE, 'link', 'set', 'lo', 'up');
    ip(fabric, 'link', 'add', 'npo', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', OUTSIDE);
    ip(fabric, 'link', 'set', 'npo', 'master', 'br0', 'up');
    ip(OUTSIDE, 'addr', 'add', `${CLIENT}/24`, 'dev', 'eth0');
    ip(OUTSIDE, 'link', 'set', 'eth0', 'up');
    ip(OUTSIDE, 'route', 'add', '198.19.192.0/18', 'via', EXTERNAL.alpha as string);
    for (const [node, address] of Object.entries(EXTERNAL))
      ip(netnsOfNode(node), 'addr', 'replace', `${address}/24`, 'dev', 'fabric0');
    for (const p of state.topology?.pods ?? []) {
      if (!p.id.startsWith('s/')) continue;
      const server = nodeIn(p.netns, SERVER, { id: p.id });
      servers.push(server);
      await server.waitFor('ready');
    }
  }, 120_000);

  afterAll(async () => {
    for (const s of servers) s.kill();
    try {
      if (existsSync(`/run/netns/${OUTSIDE}`)) execFileSync('ip', ['netns', 'del', OUTSIDE]);
    } finally {
      await labDown(LAB);
    }
    expect(existsSync(`/sys/fs/bpf/switchyard/${LAB}`)).toBe(false);
  });

  it('Cluster: a node port reaches every backend; the remote one sees the node, the local one the client', async () => {
    const changed = await applyAll(withNodePorts(state.ir));
    expect(changed).toContain('nodeport:maps');
    const answers = await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 24);
    expect(answers.filter((a) => !a.ok)).toEqual([]);
    expect(seen(answers)).toEqual({
      's/b1': [CLIENT],
      's/b2': [state.ir.nodes.find((n) => n.name === 'alpha')?.address],
    });
    // An apply with nothing new changes nothing.
    expect(await applyAll(withNodePorts(state.ir))).toEqual([]);
  });

  it('a load-balancer address reaches the backends at the service port, UDP too', async () => {
    const tcp = await fromOutside(LB, 80, 16);
    expect(tcp.filter((a) => !a.ok)).toEqual([]);
    expect(Object.keys(seen(tcp)).sort()).toEqual(['s/b1', 's/b2']);
    const udp = await fromOutside(EXTERNAL.beta as string, NODE_PORT, 16, { udp: true });
    expect(udp.filter((a) => !a.ok)).toEqual([]);
    expect(Object.keys(seen(udp)).sort()).toEqual(['s/b1', 's/b2']);
  });

  it('Local: only the backend on the node the traffic entered, and it sees the client', async () => {
    await applyAll(withNodePorts(state.ir, { policy: 'Local' }));
    expect(seen(await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 12))).toEqual({ 's/b1': [CLIENT] });
    expect(seen(await fromOutside(EXTERNAL.beta as string, NODE_PORT, 12))).toEqual({ 's/b2': [CLIENT] });
    expect(seen(await fromOutside(LB, 80, 12))).toEqual({ 's/b1': [CLIENT] });
  });

  it('refuses a node port or load-balancer address without backends, and a port the address does not serve', async () => {
    const started = Date.now();
    for (const [host, port] of [
      [EXTERNAL.alpha as string, EMPTY_PORT],
      [LB_EMPTY, 80],
      [LB, 99],
    ] as const) {
      const answers = await fromOutside(host, port, 3, { timeoutMs: 3000 });
      expect(
        answers.map((a) => a.error),
        `${host}:${port}`,
      ).toEqual(['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
    }
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('a pod reaches node ports and load-balancer addresses at connect, a backend its own (hairpin)', async () => {
    const answers = await fromPod('s/b1', EXTERNAL.alpha as string, NODE_PORT, 16);
    expect(answers.filter((a) => !a.ok)).toEqual([]);
    expect(seen(answers)['s/b1']).toEqual(['198.18.40.11']);
    expect(Object.keys(seen(await fromPod('s/b1', LB, 80, 16))).sort()).toEqual(['s/b1', 's/b2']);
    const refused = await fromPod('x/a', LB_EMPTY, 80, 2);
    expect(refused.map((a) => a.error)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
  });

  it('ClientIP affinity keeps a client on one backend until its timeout passes', async () => {
    await applyAll(withNodePorts(state.ir, { stickySeconds: 1 }));
    const sticky = seen(await fromOutside(EXTERNAL.alpha as string, STICKY_PORT, 12));
    expect(Object.keys(sticky)).toHaveLength(1);
    // After the timeout the choice is made again: within 10 rounds the other backend shows up
    // (all ten the same by chance: 1 in 1024).
    const first = Object.keys(sticky)[0];
    const later = await fromOutside(EXTERNAL.alpha as string, STICKY_PORT, 10, { pauseMs: 1200 });
    expect(Object.keys(seen(later)).some((p) => p !== first)).toBe(true);
  }, 30_000);

  it('policy judges the translated packet: a policy admitting only namespace x blocks the outside client', async () => {
    const ir = await converged(true);
    await applyAll(withNodePorts(ir, { policy: 'Local' }));
    const answers = await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 2, { timeoutMs: 800 });
    expect(answers.map((a) => a.error)).toEqual(['timeout', 'timeout']);
    await applyAll(withNodePorts(await converged(false), { policy: 'Local' }));
    expect(seen(await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 2))).toEqual({ 's/b1': [CLIENT] });
  });

  it('drift: a node-port entry deleted or a link detached behind its back shows, and an apply repairs it', async () => {
    const ir = withNodePorts(state.ir);
    await applyAll(ir);
    const alpha = targets().find((t) => t.node === 'alpha') as NodeTarget;
    const dir = nodeDir(alpha.scope, alpha.node);
    const before = ebpfFingerprint(alpha);
    const svc = BpfMap.fromPin(join(dir, 'maps', 'np_svc'), npSvcKey, svcValue);
    try {
      const key = [...svc.keys()].find((k) => k.port === NODE_PORT && k.proto === 6);
      if (!key) throw new Error('no node-port entry');
      svc.delete(key);
    } finally {
      svc.close();
    }
    await sleep(50);
    expect(ebpfFingerprint(alpha)).not.toBe(before);
    expect((await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 1))[0]?.error).toBe('ECONNREFUSED');
    // An ordinary apply trusts the shadow of what it wrote (it reads nothing back); the repair, as
    // the agent does it once the fingerprint shows drift, forgets the shadow first.
    expect((await ebpfBackend.apply(alpha, ir)).changed.filter((c) => c.startsWith('nodeport:'))).toEqual([]);
    ebpfBackend.dropShadow(alpha);
    expect((await ebpfBackend.apply(alpha, ir)).changed).toContain('nodeport:services');
    expect((await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 4)).filter((a) => !a.ok)).toEqual([]);
    const repaired = ebpfFingerprint(alpha);

    const ingress = readdirSync(join(dir, 'links')).find((n) => n.startsWith('np-fabric0-ingress-'));
    const link = Link.fromPin(join(dir, 'links', ingress as string));
    link.detach();
    link.close();
    expect(ebpfFingerprint(alpha)).not.toBe(repaired);
    expect(prepareEbpfRepair(alpha)).toContain(join(dir, 'links', ingress as string));
    ebpfBackend.dropShadow(alpha);
    expect((await ebpfBackend.apply(alpha, ir)).changed).toContain('nodeport:fabric0/ingress');
    expect((await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 4)).filter((a) => !a.ok)).toEqual([]);
  });

  it('an apply that changes nothing in node ports costs nothing; a changed endpoint writes only its service', async () => {
    const ir = withNodePorts(state.ir);
    await applyAll(ir);
    const alpha = targets().find((t) => t.node === 'alpha') as NodeTarget;
    const svc = BpfMap.fromPin(join(nodeDir(alpha.scope, alpha.node), 'maps', 'np_svc'), npSvcKey, svcValue);
    try {
      // A planted entry stays: the same IR again neither reads the maps back nor writes them.
      const planted = { vip: EXTERNAL.alpha as string, port: 30099, proto: 6, node: 0 };
      svc.update(planted, { count: 0, id: 999, affinity: 0, flags: 0 });
      const nodePorts = (changed: string[]): string[] => changed.filter((c) => c.startsWith('nodeport:'));
      expect(nodePorts((await ebpfBackend.apply(alpha, ir)).changed)).toEqual([]);
      // One backend fewer in s/web: its entries change, the planted one (not in the plan) stays.
      const fewer: IR = {
        ...ir,
        services: ir.services.map((t) =>
          t.service === 's/web' ? { ...t, backends: t.backends.filter((b) => b.endpoint === 's/b1') } : t,
        ),
      };
      expect(nodePorts((await ebpfBackend.apply(alpha, fewer)).changed)).toEqual(['nodeport:services']);
      expect(svc.lookup(planted)?.id).toBe(999); // not read back, so not removed
      const web = [...svc.entries()].find(([k]) => k.port === NODE_PORT && k.proto === 6);
      expect(web?.[1].count).toBe(1);
      svc.delete(planted);
    } finally {
      svc.close();
    }
    ebpfBackend.dropShadow(alpha);
    await applyAll(ir);
  });

  it('XDP translates on its own: with the tcx ingress program detached a node port still answers; a detached XDP link is drift an apply repairs', async () => {
    const ir = withNodePorts(state.ir, { policy: 'Local' });
    await applyAll(ir);
    const alpha = targets().find((t) => t.node === 'alpha') as NodeTarget;
    const links = join(nodeDir(alpha.scope, alpha.node), 'links');
    const before = ebpfFingerprint(alpha);
    const ingress = readdirSync(links).find((n) => n.startsWith('np-fabric0-ingress-'));
    const tcx = Link.fromPin(join(links, ingress as string));
    tcx.detach();
    tcx.close();
    // Only the fabric's XDP program is left to translate what enters (tcx egress still does the replies).
    expect(seen(await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 6))).toEqual({ 's/b1': [CLIENT] });
    const xdp = Link.fromPin(join(links, 'xdp-fabric0'));
    xdp.detach();
    xdp.close();
    expect(ebpfFingerprint(alpha)).not.toBe(before);
    expect(prepareEbpfRepair(alpha)).toContain(join(links, 'xdp-fabric0'));
    ebpfBackend.dropShadow(alpha);
    const changed = (await ebpfBackend.apply(alpha, ir)).changed;
    expect(changed).toContain('xdp:fabric0');
    expect(changed).toContain('nodeport:fabric0/ingress');
    expect(seen(await fromOutside(EXTERNAL.alpha as string, NODE_PORT, 6))).toEqual({ 's/b1': [CLIENT] });
  });

  it('removes its programs and maps when nothing is reached from outside any more', async () => {
    const changed = await applyAll(state.ir);
    expect(changed).toContain('nodeport:removed');
    for (const t of targets()) expect(existsSync(`${nodeDir(t.scope, t.node)}/maps/np_svc`)).toBe(false);
  });
});
