/**
 * Issue 19: IPv6 Services on the eBPF backend's connect-time load balancer, in a real lab (one
 * for the file). A dual-stack Service over three backend pods is reached from pod x/a on both of
 * its cluster IPs: connect6/sendmsg6 choose the backend of an IPv6 VIP as connect4/sendmsg4 do
 * for the IPv4 one, recvmsg6 and getpeername6 show the VIP, an IPv6 socket connecting to
 * ::ffff:<IPv4 VIP> is balanced as IPv4, and a service without endpoints is refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfMap, codecs } from '../../src/bpf/index.js';
import { pinReplacing } from '../../src/dataplane/ebpf/meta.js';
import { SVC_MAP, svcKey, svcValue } from '../../src/dataplane/ebpf/services-layout.js';
import { openServiceMaps, serviceProgramIds, servicesDir } from '../../src/dataplane/ebpf/services.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { probeService } from '../../src/lab/probe-service.js';
import { probeMatrix } from '../../src/lab/probe/prober.js';
import type { ProbeOutcome } from '../../src/lab/probe/protocol.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { PodClient, UDP_PROBE_HANDLER } from '../support/pod-client.js';
import { namespace, pod, service, type Manifest } from '../support/manifests.js';
import { manifestFile } from './lab-harness.js';

const LAB = `v6b-${process.pid % 10000}`;
const BACKENDS = ['s/b1', 's/b2', 's/b3'];
/** chi-square critical value for df = 2 at p = 0.001. */
const CHI2_CRIT = 13.8155;
const DUAL = { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'] };

function manifests(opts: { relabel?: string } = {}): Manifest[] {
  const web = (name: string): Manifest =>
    pod('s', name, {
      labels: { app: opts.relabel === `s/${name}` ? 'old' : 'web' },
      ports: [
        { name: 'http', containerPort: 8080, protocol: 'TCP' },
        { name: 'dns', containerPort: 5353, protocol: 'UDP' },
      ],
    });
  return [
    namespace('x', { ns: 'x' }),
    namespace('s', { ns: 's' }),
    pod('x', 'a', { labels: { role: 'client' } }),
    pod('x', 'c', { labels: { role: 'other' } }),
    web('b1'),
    web('b2'),
    web('b3'),
    service('s', 'web', {
      ...DUAL,
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' },
        { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
        { name: 'echo', port: 7000, targetPort: 7000, protocol: 'TCP' },
      ],
    }),
    service('s', 'sticky', {
      ...DUAL,
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    }),
    service('s', 'empty', {
      ...DUAL,
      selector: { app: 'nobody' },
      ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
    }),
  ];
}

/** Answers `<pod id>` on connect (listens on both families: `::`, not IPv6-only). */
const ECHO_SERVER = `
import net from 'node:net';
const id = process.argv.at(-1);
net.createServer((c) => { c.on('error', () => undefined); c.write(id + '\\n'); }).listen(7000, () => console.log('ready'));
`;

/** JSON commands on stdin, one JSON answer per line on stdout: a TCP connect or a UDP send. */
const CLIENT = `
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';
const say = (o) => console.log(JSON.stringify(o));
${UDP_PROBE_HANDLER}readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === 'tcp') {
    const s = net.connect({ host: cmd.host, port: cmd.port });
    s.on('error', (e) => say({ seq: cmd.seq, ok: false, error: e.code }));
    s.once('data', (d) => {
      say({ seq: cmd.seq, ok: true, answer: d.toString().trim(), peer: s.remoteAddress + ':' + s.remotePort });
      s.destroy();
    });
  } else if (cmd.op === 'udp') udpProbe(cmd);
});
console.log(JSON.stringify({ ready: true }));
`;

function chiSquare(answered: Record<string, number>, total: number): number {
  const expected = total / BACKENDS.length;
  return BACKENDS.reduce((s, b) => s + ((answered[b] ?? 0) - expected) ** 2 / expected, 0);
}

describeKernel('ebpf: IPv6 services balanced at connect (connect6, sendmsg6, recvmsg6, getpeername6)', () => {
  let state: LabState;
  const servers: ChildProcess[] = [];
  let client: PodClient | undefined;

  const labPod = (id: string): { netns: string; slug: string } => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };

  /** The cluster IP of a service in one family. */
  const vip = (name: string, family: 4 | 6): string => {
    const t = state.ir.services.find((s) => s.service === name && (s.family ?? 4) === family);
    if (!t) throw new Error(`no IPv${family} table of ${name}`);
    return t.address;
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

  /** `count` new connections from x/a to a bare address (any family), through the lab's prober. */
  async function probe(
    address: string,
    port: number,
    count: number,
    timeoutMs = 1000,
  ): Promise<ProbeOutcome[]> {
    const p = labPod('x/a');
    const rows = await probeMatrix({
      protocol: 'TCP',
      port,
      timeoutMs,
      sources: [{ id: 'x/a', netns: p.netns, cgroup: join(state.cgroupRoot, p.slug) }],
      targets: Array.from({ length: count }, (_, i) => ({ id: `c${i}`, address })),
    });
    return Object.values(rows['x/a'] ?? {});
  }

  beforeAll(async () => {
    await labDown(LAB).catch(() => undefined);
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
    await labDown(LAB);
  }, 60_000);

  it('attaches the IPv6 hooks beside the IPv4 ones', () => {
    expect(Object.keys(serviceProgramIds(LAB)).sort()).toEqual([
      'connect4',
      'connect6',
      'getpeername4',
      'getpeername6',
      'recvmsg4',
      'recvmsg6',
      'sendmsg4',
      'sendmsg6',
    ]);
    expect(vip('s/web', 6)).toMatch(/^fd00:5957:/);
  });

  for (const family of [6, 4] as const)
    it(`spreads connections to the IPv${family} cluster IP over all three backends (chi-square, df = 2)`, async () => {
      const count = 1200;
      const r = await probeService(LAB, { from: 'x/a', to: 'svc/s/web:80', count, family, timeoutMs: 3000 });
      expect(r.address).toBe(vip('s/web', family));
      expect(r.failures).toBe(0);
      expect(Object.keys(r.answered).sort()).toEqual(BACKENDS);
      const chi2 = chiSquare(r.answered, count);
      console.log(
        `services-v6-ebpf: IPv${family} spread ${JSON.stringify(r.answered)}, chi-square ${chi2.toFixed(3)}`,
      );
      expect(chi2).toBeLessThan(CHI2_CRIT);
    });

  it('keeps ClientIP affinity on both families: each client sticks to one backend per cluster IP', async () => {
    for (const family of [6, 4] as const)
      for (const from of ['x/a', 'x/c']) {
        const r = await probeService(LAB, {
          from,
          to: 'svc/s/sticky:80',
          count: 150,
          family,
          timeoutMs: 3000,
        });
        expect(r.failures, `${from} IPv${family}`).toBe(0);
        expect(Object.keys(r.answered), `${from} IPv${family}`).toHaveLength(1);
        expect(BACKENDS).toContain(Object.keys(r.answered)[0]);
      }
  });

  it('UDP over IPv6: sendmsg6 balances each send, recvmsg6 shows the reply as coming from the VIP', async () => {
    const v6 = vip('s/web', 6);
    const answers = new Set<string>();
    for (let i = 0; i < 24; i++) {
      const r = await (client as PodClient).ask({ op: 'udp', host: v6, port: 53 });
      expect(r).toMatchObject({ ok: true, from: `${v6}:53` });
      answers.add(r.answer ?? '');
    }
    expect([...answers].every((a) => BACKENDS.includes(a))).toBe(true);
    expect(answers.size).toBeGreaterThan(1);
  });

  it('getpeername6 returns the IPv6 VIP, not the backend', async () => {
    const v6 = vip('s/web', 6);
    const r = await (client as PodClient).ask({ op: 'tcp', host: v6, port: 7000 });
    expect(r).toMatchObject({ ok: true, peer: `${v6}:7000` });
    expect(BACKENDS).toContain(r.answer);
  });

  it('an IPv6 socket connecting to ::ffff:<IPv4 VIP> is balanced as IPv4 and sees the mapped VIP', async () => {
    const mapped = `::ffff:${vip('s/web', 4)}`;
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = await (client as PodClient).ask({ op: 'tcp', host: mapped, port: 7000 });
      expect(r).toMatchObject({ ok: true, peer: `${mapped}:7000` });
      seen.add(r.answer ?? '');
    }
    expect([...seen].every((a) => BACKENDS.includes(a))).toBe(true);
    expect(seen.size).toBeGreaterThan(1);
  });

  it('refuses an IPv6 service without endpoints, and a port the IPv6 VIP does not define', async () => {
    const empty = await probeService(LAB, {
      from: 'x/a',
      to: 'svc/s/empty:80',
      count: 3,
      family: 6,
      timeoutMs: 1000,
    });
    expect(empty.failures).toBe(3);
    expect(Object.keys(empty.errors).join()).toMatch(/ECONNREFUSED|refused/i);
    for (const o of await probe(vip('s/web', 6), 81, 3)) {
      expect(o.ok).toBe(false);
      expect(o.error).toMatch(/ECONNREFUSED|refused/i);
    }
  });

  it('a backend that leaves gets no new IPv6 connections; the maps change in place', async () => {
    const before = serviceProgramIds(LAB);
    await apply({ relabel: 's/b2' });
    expect(serviceProgramIds(LAB)).toEqual(before);
    const r = await probeService(LAB, {
      from: 'x/a',
      to: 'svc/s/web:80',
      count: 200,
      family: 6,
      timeoutMs: 3000,
    });
    expect(r.failures).toBe(0);
    expect(Object.keys(r.answered).sort()).toEqual(['s/b1', 's/b3']);
  });

  it('an apply over maps pinned with the IPv4-only layout (4-byte addresses) replaces them', async () => {
    // The maps an earlier version pinned: same names, 4-byte addresses in keys and values.
    const dir = join(servicesDir(LAB), 'maps');
    const old: [string, number, number][] = [
      [SVC_MAP.services, 8, 16],
      [SVC_MAP.backends, 8, 8],
      [SVC_MAP.revnat, 16, 8],
    ];
    for (const [name, keySize, valueSize] of old) {
      const m = BpfMap.create({
        type: 'hash',
        name,
        key: codecs.bytes(keySize),
        value: codecs.bytes(valueSize),
        maxEntries: 16,
      });
      try {
        pinReplacing(m, join(dir, name));
      } finally {
        m.close();
      }
    }
    const before = serviceProgramIds(LAB);
    const replaced: string[] = [];
    expect(openServiceMaps(LAB, replaced)).toBeUndefined();
    expect(replaced.sort()).toEqual(old.map(([name]) => name).sort());
    await apply({});
    // New maps of this layout are pinned, filled, and every hook's program reloaded against them.
    const svc = BpfMap.fromPin(join(dir, SVC_MAP.services), svcKey, svcValue);
    try {
      const key = { vip: vip('s/web', 6), port: 80, proto: 6, node: 0 };
      expect(svc.lookup(key)?.count).toBe(3);
    } finally {
      svc.close();
    }
    const after = serviceProgramIds(LAB);
    for (const hook of Object.keys(before)) expect(after[hook], hook).not.toBe(before[hook]);
    for (const family of [6, 4] as const) {
      const r = await probeService(LAB, {
        from: 'x/a',
        to: 'svc/s/web:80',
        count: 300,
        family,
        timeoutMs: 3000,
      });
      expect(r.failures, `IPv${family}`).toBe(0);
      expect(Object.keys(r.answered).sort(), `IPv${family}`).toEqual(BACKENDS);
    }
  });
});
