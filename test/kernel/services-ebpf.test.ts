/**
 * Connect-time load balancing of the eBPF backend in a real lab: a ClusterIP service over three
 * backend pods, reached from pod x/a whose sockets carry its cgroup (the lab's prober and a
 * client process both join it), so the cgroup sock_addr programs choose the backend at connect.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { serviceProgramIds, servicesDir } from '../../src/dataplane/ebpf/services.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { probeMatrix } from '../../src/lab/probe/prober.js';
import type { ProbeOutcome } from '../../src/lab/probe/protocol.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { PodClient, UDP_PROBE_HANDLER } from '../support/pod-client.js';
import { namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';
import { manifestFile } from './lab-harness.js';

const LAB = `svcebpf-${process.pid % 10000}`;
const VIP = '198.19.0.10';
const STICKY_VIP = '198.19.0.11';
const BACKENDS = ['s/b1', 's/b2', 's/b3'];
/** chi-square critical value for df = 2 at p = 0.001. */
const CHI2_CRIT = 13.8155;

function manifests(opts: { relabel?: string; policy?: 'deny' | 'allow-a' } = {}): Manifest[] {
  const web = (name: string): Manifest =>
    pod('s', name, {
      labels: { app: opts.relabel === `s/${name}` ? 'old' : 'web' },
      ports: [
        { name: 'http', containerPort: 8080, protocol: 'TCP' },
        { name: 'dns', containerPort: 5353, protocol: 'UDP' },
      ],
    });
  const out: Manifest[] = [
    namespace('x', { ns: 'x' }),
    namespace('s', { ns: 's' }),
    pod('x', 'a', { labels: { role: 'client' } }),
    pod('x', 'c', { labels: { role: 'other' } }),
    web('b1'),
    web('b2'),
    web('b3'),
    service('s', 'web', {
      clusterIP: VIP,
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' },
        { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
        { name: 'echo', port: 7000, targetPort: 7000, protocol: 'TCP' },
      ],
    }),
    service('s', 'sticky', {
      clusterIP: STICKY_VIP,
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    }),
  ];
  if (opts.policy)
    out.push(
      networkPolicy('s', 'web-ingress', {
        podSelector: { matchLabels: { app: 'web' } },
        policyTypes: ['Ingress'],
        ingress:
          opts.policy === 'deny'
            ? []
            : [
                {
                  from: [
                    {
                      namespaceSelector: { matchLabels: { ns: 'x' } },
                      podSelector: { matchLabels: { role: 'client' } },
                    },
                  ],
                },
              ],
      }),
    );
  return out;
}

/** Answers `<pod id>` on connect, then `<pod id>:<line>` for each line; the connection stays open. */
const ECHO_SERVER = `
import net from 'node:net';
const id = process.argv.at(-1);
net.createServer((c) => {
  c.on('error', () => undefined);
  c.write(id + '\\n');
  let buf = '';
  c.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) { c.write(id + ':' + buf.slice(0, i) + '\\n'); buf = buf.slice(i + 1); }
  });
}).listen(7000, () => console.log('ready'));
`;

/** JSON commands on stdin, one JSON answer per line on stdout. */
const CLIENT = `
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';
const sockets = new Map();
const pendingSeq = new Map();
const say = (o) => console.log(JSON.stringify(o));
${UDP_PROBE_HANDLER}readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === 'tcp') {
    const s = net.connect({ host: cmd.host, port: cmd.port });
    let buf = '';
    let greeted = false;
    s.on('error', (e) => say({ seq: cmd.seq, ok: false, error: e.code }));
    s.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!greeted) {
          greeted = true;
          sockets.set(cmd.seq, s);
          say({ seq: cmd.seq, ok: true, answer: text, peer: s.remoteAddress + ':' + s.remotePort });
        } else say({ seq: pendingSeq.get(s), ok: true, answer: text });
      }
    });
  } else if (cmd.op === 'send') {
    const s = sockets.get(cmd.handle);
    pendingSeq.set(s, cmd.seq);
    s.write(cmd.text + '\\n');
  } else if (cmd.op === 'udp') udpProbe(cmd);
});
console.log(JSON.stringify({ ready: true }));
`;

describeKernel('ebpf: connect-time load balancing in the lab', () => {
  let state: LabState;
  const servers: ChildProcess[] = [];
  let client: PodClient | undefined;

  const labPod = (id: string): { netns: string; slug: string } => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };

  async function apply(
    opts: Parameters<typeof manifests>[0] = {},
    mode: 'up' | 'apply' = 'apply',
  ): Promise<void> {
    const file = manifestFile(manifests(opts));
    const result = await converge({
      name: LAB,
      model: loadManifests([file]),
      files: [file],
      mode,
      backend: 'ebpf',
      nodeCount: 2,
    });
    state = result.state;
  }

  /** `count` connections from `from` to ip:port at once, through the lab's prober. */
  async function probe(
    from: string,
    address: string,
    port: number,
    count: number,
    protocol: 'TCP' | 'UDP' = 'TCP',
    timeoutMs = 3000,
  ): Promise<ProbeOutcome[]> {
    const p = labPod(from);
    const out: ProbeOutcome[] = [];
    for (let done = 0; done < count; done += 1000) {
      const n = Math.min(1000, count - done);
      const rows = await probeMatrix({
        protocol,
        port,
        timeoutMs,
        sources: [{ id: from, netns: p.netns, cgroup: join(state.cgroupRoot, p.slug) }],
        targets: Array.from({ length: n }, (_, i) => ({ id: `c${i}`, address })),
      });
      out.push(...Object.values(rows[from] ?? {}));
    }
    return out;
  }

  function tally(outcomes: readonly ProbeOutcome[]): Record<string, number> {
    const t: Record<string, number> = {};
    for (const o of outcomes) {
      const k = o.ok ? (o.answer ?? '?') : `error:${o.error ?? '?'}`;
      t[k] = (t[k] ?? 0) + 1;
    }
    return t;
  }

  beforeAll(async () => {
    await apply({}, 'up');
    for (const id of BACKENDS) {
      const child = spawn(
        'ip',
        ['netns', 'exec', labPod(id).netns, process.execPath, '--input-type=module', '-e', ECHO_SERVER, id],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      servers.push(child);
      await new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        child.on('exit', (code) => reject(new Error(`echo server in ${id} exited ${code}`)));
      });
    }
    const a = labPod('x/a');
    client = PodClient.start(a, state.cgroupRoot, CLIENT);
  }, 120_000);

  afterAll(async () => {
    client?.kill();
    for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
    if (!process.env.SVC_KEEP) await labDown(LAB);
    expect(existsSync(servicesDir(LAB))).toBe(false);
  }, 60_000);

  it('spreads 3000 connections uniformly over the three backends (chi-square, df = 2)', async () => {
    const outcomes = await probe('x/a', VIP, 80, 3000);
    const counts = tally(outcomes);
    expect(Object.keys(counts).sort()).toEqual(BACKENDS);
    const expected = 1000;
    const chi2 = BACKENDS.reduce((s, b) => s + ((counts[b] ?? 0) - expected) ** 2 / expected, 0);
    console.log(`services-ebpf: spread ${JSON.stringify(counts)}, chi-square ${chi2.toFixed(3)}`);
    expect(chi2).toBeLessThan(CHI2_CRIT);
  });

  it('keeps ClientIP affinity: every connection of a client goes to one backend', async () => {
    const fromA = tally(await probe('x/a', STICKY_VIP, 80, 200));
    expect(Object.keys(fromA)).toHaveLength(1);
    expect(BACKENDS).toContain(Object.keys(fromA)[0]);
    const fromC = tally(await probe('x/c', STICKY_VIP, 80, 200));
    expect(Object.keys(fromC)).toHaveLength(1);
  });

  it('reports the VIP as the peer (getpeername)', async () => {
    const r = await (client as PodClient).ask({ op: 'tcp', host: VIP, port: 7000 });
    expect(r).toMatchObject({ ok: true, peer: `${VIP}:7000` });
    expect(BACKENDS).toContain(r.answer);
  });

  it('balances UDP both ways: unconnected replies appear to come from the VIP, connected sockets too', async () => {
    const answers = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = await (client as PodClient).ask({ op: 'udp', host: VIP, port: 53 });
      expect(r).toMatchObject({ ok: true, from: `${VIP}:53` });
      answers.add(r.answer ?? '');
    }
    expect([...answers].every((a) => BACKENDS.includes(a))).toBe(true);
    const connected = tally(await probe('x/a', VIP, 53, 30, 'UDP'));
    expect(Object.keys(connected).every((k) => BACKENDS.includes(k))).toBe(true);
  });

  it('refuses a port the service does not define (ECONNREFUSED) instead of sending it out', async () => {
    const outcomes = await probe('x/a', VIP, 81, 3, 'TCP', 1000);
    for (const o of outcomes) {
      expect(o.ok).toBe(false);
      expect(o.error).toMatch(/ECONNREFUSED|refused/i);
    }
    const udp = await (client as PodClient).ask({ op: 'udp', host: VIP, port: 54 });
    expect(udp).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
  });

  it('a backend that leaves gets no new connections, its established one keeps working; maps change in place', async () => {
    const c = client as PodClient;
    const held = await c.ask({ op: 'tcp', host: VIP, port: 7000 });
    const leaving = held.answer as string;
    expect(BACKENDS).toContain(leaving);
    const before = serviceProgramIds(LAB);
    expect(Object.keys(before).sort()).toEqual([
      'connect4',
      'connect6',
      'getpeername4',
      'getpeername6',
      'recvmsg4',
      'recvmsg6',
      'sendmsg4',
      'sendmsg6',
    ]);

    await apply({ relabel: leaving });
    expect(serviceProgramIds(LAB)).toEqual(before);

    const counts = tally(await probe('x/a', VIP, 80, 300));
    expect(counts[leaving]).toBeUndefined();
    expect(Object.keys(counts).sort()).toEqual(BACKENDS.filter((b) => b !== leaving));

    const echo = await c.ask({ op: 'send', handle: held.seq, text: 'still there' });
    expect(echo).toMatchObject({ ok: true, answer: `${leaving}:still there` });
  });

  it('policy applies to the real backend: a deny blocks the service, an allow lets x/a through', async () => {
    await apply({ relabel: 's/b3', policy: 'deny' });
    const denied = await probe('x/a', VIP, 80, 10, 'TCP', 800);
    expect(denied.every((o) => !o.ok)).toBe(true);

    await apply({ relabel: 's/b3', policy: 'allow-a' });
    const allowed = tally(await probe('x/a', VIP, 80, 60, 'TCP', 3000));
    expect(Object.keys(allowed).sort()).toEqual(['s/b1', 's/b2']);
    const other = await probe('x/c', VIP, 80, 10, 'TCP', 800);
    expect(other.every((o) => !o.ok)).toBe(true);
  });
});
