/**
 * Kernel drop reasons end to end (issue 23, "Drop reasons"), in one lab with agents: packets the
 * kernel drops in a node's namespace show up as `dropped` flows with the kernel's reason and
 * function (`flows --verdict dropped`), in `switchyard_kernel_drops_total{reason}`, and as the
 * explanation `lab reach` and `explain --lab` give for a pair that policy allows but fails.
 * Policy drops keep their deciding rule and are not counted again as kernel drops.
 * SY_DROPS_BACKEND picks the backend (default iptables; the tracer does not depend on it).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from 'node:http';
import { apiSocket } from '../../src/agent/paths.js';
import { agentStateDir } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import type { LabPod } from '../../src/lab/topology.js';
import { listNetns } from '../../src/netns/index.js';
import type { Flow } from '../../src/observe/flow-types.js';
import { namespace, networkPolicy, pod } from '../support/manifests.js';
import { waitUntil } from '../support/until.js';
import { describeKernel } from '../support/kernel.js';
import { cli, cliOk, manifestFile } from './lab-harness.js';

const LAB = `dr${process.pid % 10000}`;
const BACKEND = process.env.SY_DROPS_BACKEND ?? 'iptables';
/** Not routed anywhere in the lab (outside pods, VIPs and the fabric). */
const NOWHERE = '198.19.250.9';
const PORTS = [{ name: 'http', containerPort: 80, protocol: 'TCP' as const }];

/** x/c accepts only x/a: b → c is a policy drop, a → c is allowed. */
const FILE = manifestFile(
  [
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { pod: 'a' }, ports: PORTS }),
    pod('x', 'b', { labels: { pod: 'b' }, ports: PORTS }),
    pod('x', 'c', { labels: { pod: 'c' }, ports: PORTS }),
    networkPolicy('x', 'c-from-a', {
      podSelector: { matchLabels: { pod: 'c' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'a' } } }], ports: [{ port: 80 }] }],
    }),
  ],
  'drops.yaml',
);

let pods: Record<'a' | 'b' | 'c', LabPod>;
let nodeNetns: string;

function ip(netns: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', netns, ...args], { encoding: 'utf8', timeout: 10_000 });
}

/** `count` UDP datagrams from inside `netns`, from `source` (or the route's choice) to dst:port. */
function sendUdp(netns: string, dst: string, port: number, count: number, source?: string): void {
  const script = `
const s = require('node:dgram').createSocket('udp4');
const [dst, port, count, source] = process.argv.slice(1);
s.bind(source ? { address: source } : {}, async () => {
  for (let i = 0; i < Number(count); i++) await new Promise((r) => s.send('drop?', Number(port), dst, r));
  s.close();
});`;
  ip(netns, process.execPath, '-e', script, dst, String(port), String(count), ...(source ? [source] : []));
}

function metricsText(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
}

async function droppedFlows(): Promise<Flow[]> {
  const out = await cliOk(['flows', '--lab', LAB, '--verdict', 'dropped', '--json', '--limit', '1000']);
  return JSON.parse(out) as Flow[];
}

/** Waits for a dropped flow matching `match` (drops are drained once per 1 s interval). */
async function dropped(match: (f: Flow) => boolean): Promise<Flow> {
  return waitUntil('a dropped flow', async () => (await droppedFlows()).find(match), 10_000, 250);
}

describeKernel(`kernel drop reasons (${BACKEND})`, () => {
  beforeAll(async () => {
    await cliOk(['lab', 'up', FILE, '--name', LAB, '--backend', BACKEND]);
    const topology = readState(LAB)?.topology;
    if (!topology) throw new Error('lab has no topology');
    const byName = (n: string): LabPod => topology.pods.find((p) => p.id === `x/${n}`) as LabPod;
    pods = { a: byName('a'), b: byName('b'), c: byName('c') };
    nodeNetns = topology.nodes[0]?.netns as string;
  }, 120_000);

  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    expect(listNetns().filter((n) => n.startsWith(`sy-${LAB}-`))).toEqual([]);
  }, 60_000);

  it('a packet to an address with no route is dropped with the kernel reason and function', async () => {
    sendUdp(pods.a.netns, NOWHERE, 9999, 3);
    const f = await dropped((x) => x.src === pods.a.address && x.dst === NOWHERE);
    expect(f).toMatchObject({
      verdict: 'dropped',
      protocol: 'UDP',
      dport: 9999,
      endpoint: 'x/a',
      direction: 'egress',
      rule: `kernel/${f.dropReason}`,
    });
    expect(f.dropReason).toMatch(/NOROUTE/);
    expect(f.packets).toBeGreaterThanOrEqual(3);
    // A function name from kallsyms, not a raw address.
    expect(f.dropFunction).toMatch(/^[a-z_][\w.]*\+0x[0-9a-f]+/);
  }, 30_000);

  it('a packet with a spoofed source is dropped by rp_filter (IP_RPFILTER)', async () => {
    // rp_filter only inside the lab's node namespace; the spoofed source is pod b's address.
    ip(
      nodeNetns,
      'sysctl',
      '-qw',
      'net.ipv4.conf.all.rp_filter=1',
      `net.ipv4.conf.${pods.a.hostInterface}.rp_filter=1`,
    );
    ip(pods.a.netns, 'ip', 'addr', 'add', `${pods.b.address}/32`, 'dev', 'eth0');
    try {
      sendUdp(pods.a.netns, pods.c.address, 7777, 2, pods.b.address);
      const f = await dropped((x) => x.src === pods.b.address && x.dport === 7777);
      expect(f).toMatchObject({ dropReason: 'IP_RPFILTER', dst: pods.c.address, endpoint: 'x/c' });
    } finally {
      ip(pods.a.netns, 'ip', 'addr', 'del', `${pods.b.address}/32`, 'dev', 'eth0');
      ip(
        nodeNetns,
        'sysctl',
        '-qw',
        'net.ipv4.conf.all.rp_filter=0',
        `net.ipv4.conf.${pods.a.hostInterface}.rp_filter=0`,
      );
    }
  }, 30_000);

  it('counts kernel drops by reason in switchyard_kernel_drops_total', async () => {
    const socket = apiSocket(agentStateDir(LAB, readState(LAB)?.topology?.nodes[0]?.name ?? ''));
    const text = await metricsText(socket);
    expect(text).toMatch(/switchyard_kernel_drops_total\{[^}]*reason="IP_RPFILTER"[^}]*\} [1-9]/);
  });

  it('policy drops keep their deciding rule and are not counted as kernel drops', async () => {
    sendUdp(pods.b.netns, pods.c.address, 80, 3);
    await new Promise((r) => setTimeout(r, 2500));
    const flows = JSON.parse(await cliOk(['flows', '--lab', LAB, '--json', '--limit', '1000'])) as Flow[];
    const between = flows.filter(
      (f) => f.src === pods.b.address && f.dst === pods.c.address && f.dport === 80,
    );
    expect(between.some((f) => f.verdict === 'deny' && f.rule === 'x/c/ingress/default')).toBe(true);
    expect(between.filter((f) => f.verdict === 'dropped')).toEqual([]);
  }, 30_000);

  it('lab reach and explain --lab point at the kernel reason when a pair policy allows fails', async () => {
    // a → c is allowed; without its route in the node namespace the kernel drops it.
    ip(nodeNetns, 'ip', 'route', 'del', `${pods.c.address}/32`);
    try {
      const r = await cli(['lab', 'reach', '--name', LAB, '--from', 'x/a', '--json']);
      const matrix = JSON.parse(r.stdout) as {
        results: Record<string, Record<string, boolean>>;
        kernelDrops?: { from: string; to: string; reason: string; function: string }[];
      };
      expect(matrix.results['x/a']?.['x/c']).toBe(false);
      expect(matrix.kernelDrops?.find((h) => h.from === 'x/a' && h.to === 'x/c')?.reason).toMatch(/NOROUTE/);
      const human = await cliOk(['lab', 'reach', '--name', LAB, '--from', 'x/a']);
      expect(human).toMatch(
        /policy allows these, the kernel dropped them:\n {2}x\/a → x\/c: kernel dropped \d+ TCP packets? .*NOROUTE/,
      );
      const explained = await cliOk([
        'explain',
        FILE,
        '--from',
        'x/a',
        '--to',
        'x/c',
        '--port',
        '80',
        '--lab',
        LAB,
      ]);
      expect(explained).toMatch(/ALLOWED/);
      expect(explained).toMatch(/kernel drops seen in lab .*:\n {4}x\/a → x\/c: kernel dropped .*NOROUTE/);
    } finally {
      ip(
        nodeNetns,
        'ip',
        'route',
        'replace',
        `${pods.c.address}/32`,
        'dev',
        pods.c.hostInterface,
        'scope',
        'link',
      );
    }
  }, 60_000);
});
