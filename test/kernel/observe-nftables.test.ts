/**
 * Flow aggregates of the nftables backend with real packets. A lab (`sy-nfa…`, one node): x/a
 * serves TCP 80 to x/b only (x/c falls to the default deny), a GlobalPolicy logs everything into
 * namespace x. The backend's flow source reads the counted flow sets every 200 ms.
 *
 * The reference for packets and bytes is a table of the test's own in the node namespace
 * (`inet sy-flowcheck`, forward hook just before the backend's): named counters matching the
 * client → server packets of the original direction, which is what an allow aggregate counts
 * (the first packet by its deciding rule, the rest on the established path). It shares nothing
 * with the flow sets but the packets. Denied packets are checked against the deciding rule's own
 * counter as well (Backend.counters()).
 *
 * A second lab (NftLab, dual stack, two nodes) shows the same for IPv6.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import {
  LOST_AGGREGATE_FULL,
  type EventSource,
  type FlowCountsEvent,
  type KernelEvent,
} from '../../src/dataplane/events.js';
import { runInNetnsOrThrow } from '../../src/dataplane/exec.js';
import { AggregateDrain } from '../../src/dataplane/netfilter/aggregates.js';
import { flowCounterReader } from '../../src/dataplane/nftables/flow-counters.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { ALLOW_RULE, DEFAULT_DENY, flowLabYaml, LOG_RULE } from './flow-lab.js';
import { describeKernel } from '../support/kernel.js';
import { NftLab } from './nftables-lab.js';
import { pings } from './nftables-raw.js';
import { dualStack, irOf } from './nftables-scenarios.js';

const POLL_MS = 200;

/**
 * `count` TCP connections to host:port, `concurrency` at a time. Each waits for the server's
 * answer and close (a success) or gives up after `abortMs`: below the first SYN retransmission
 * (1 s), a refused connection is exactly one SYN. Prints the successes.
 */
const CLIENT = `
import net from 'node:net';
const { host, port, count, concurrency, abortMs } = JSON.parse(process.argv.at(-1));
let started = 0;
let ok = 0;
const one = () => new Promise((resolve) => {
  const s = net.connect({ host, port });
  let finished = false;
  const end = (success) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    if (success) ok++;
    s.destroy();
    resolve();
  };
  const timer = setTimeout(() => end(false), abortMs);
  s.on('error', () => end(false));
  s.on('data', () => {});
  s.on('end', () => end(true));
});
const worker = async () => { while (started < count) { started++; await one(); } };
await Promise.all(Array.from({ length: concurrency }, worker));
console.log(String(ok));
`;

async function connections(
  netns: string,
  host: string,
  count: number,
  opts: { abortMs: number; concurrency?: number },
): Promise<number> {
  const child = spawn(
    'nsenter',
    [
      `--net=/run/netns/${netns}`,
      '--',
      process.execPath,
      '--input-type=module',
      '-e',
      CLIENT,
      JSON.stringify({ host, port: 80, count, concurrency: opts.concurrency ?? 50, abortMs: opts.abortMs }),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  // 'close', not 'exit': the count on stdout may still be in flight when the process exits.
  const code = await new Promise((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`client in ${netns} exited ${String(code)}`);
  return Number(out.trim());
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The test's own counters in a node namespace: `name` counts packets matching `match`. */
async function installReference(netns: string, counters: Record<string, string>): Promise<void> {
  const lines = [
    'table inet sy-flowcheck {',
    ...Object.keys(counters).map((name) => `  counter ${name} {}`),
    '  chain forward {',
    '    type filter hook forward priority filter - 1; policy accept;',
    ...Object.entries(counters).map(([name, match]) => `    ${match} counter name "${name}"`),
    '  }',
    '}',
  ];
  await runInNetnsOrThrow(netns, 'nft', ['-f', '/dev/stdin'], lines.join('\n') + '\n');
}

async function reference(netns: string, name: string): Promise<{ packets: number; bytes: number }> {
  const r = await runInNetnsOrThrow(netns, 'nft', ['-j', 'list', 'counter', 'inet', 'sy-flowcheck', name]);
  const doc = JSON.parse(r.stdout) as { nftables: { counter?: { packets: number; bytes: number } }[] };
  const c = doc.nftables.find((o) => o.counter)?.counter;
  if (!c) throw new Error(`no counter ${name}`);
  return { packets: c.packets, bytes: c.bytes };
}

/** The counts events of one source run: started, `during` runs, one interval more, stopped (the last drain). */
async function recorded(
  source: EventSource,
  during: () => Promise<void>,
): Promise<{ counts: FlowCountsEvent[]; lost: { count: number; where: string }[] }> {
  const events: KernelEvent[] = [];
  const lost: { count: number; where: string }[] = [];
  await source.start({ event: (e) => events.push(e), lost: (count, where) => lost.push({ count, where }) });
  try {
    await during();
    // The last packets (FIN, ACK) of the last connections.
    await sleep(POLL_MS);
  } finally {
    await source.stop();
  }
  return { counts: events.filter((e): e is FlowCountsEvent => e.kind === 'counts'), lost };
}

/** Sums events per aggregate (verdict, rule, endpoint, direction); the deltas of many intervals add up. */
function aggregates(events: readonly FlowCountsEvent[]): Map<string, FlowCountsEvent> {
  const out = new Map<string, FlowCountsEvent>();
  for (const e of events) {
    const key = `${e.verdict} ${e.rule} ${e.endpoint ?? '-'} ${e.direction}`;
    const a = out.get(key);
    if (!a) out.set(key, { ...e });
    else {
      a.packets += e.packets;
      a.bytes += e.bytes;
      a.connections += e.connections;
      a.firstSeen = Math.min(a.firstSeen, e.firstSeen);
      a.lastSeen = Math.max(a.lastSeen, e.lastSeen);
    }
  }
  return out;
}

describeKernel('flow aggregates on nftables: counted sets drained every interval', () => {
  const LAB = `nfa${process.pid % 100000}`;
  const backend = createNftablesBackend();
  let dir = '';
  let up = false;
  let state: LabState;
  let ir: IR;
  let target: NodeTarget;

  const labPod = (id: string) => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };
  const between = (events: readonly FlowCountsEvent[], src: string, dst: string): FlowCountsEvent[] =>
    events.filter((e) => e.src === labPod(src).address && e.dst === labPod(dst).address);
  const ruleCounter = async (rule: string, endpoint: string): Promise<number> =>
    (await backend.counters(target))
      .filter((c) => c.rule === rule && c.endpoint === endpoint)
      .reduce((n, c) => n + c.packets, 0);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-nfa-'));
    const file = join(dir, 'lab.yaml');
    writeFileSync(file, flowLabYaml());
    const result = await converge({
      name: LAB,
      model: loadManifests([file]),
      files: [file],
      mode: 'up',
      backend: 'nftables',
      nodeCount: 1,
      agents: false,
    });
    up = true;
    state = result.state;
    ir = state.ir as IR;
    const node = state.topology?.nodes[0];
    if (!node) throw new Error('lab has no node');
    target = { scope: LAB, node: node.name, netns: node.netns };
    // The lab applied the table; this backend object renders the same (flows on, default size).
    await backend.apply(target, ir);
    const [a, b, c] = ['x/a', 'x/b', 'x/c'].map((id) => labPod(id).address);
    await installReference(target.netns, {
      'b-to-a': `ip saddr ${b} ip daddr ${a} tcp dport 80 ct direction original`,
      'c-to-a': `ip saddr ${c} ip daddr ${a} tcp dport 80`,
    });
  }, 120_000);

  afterAll(async () => {
    if (up) await labDown(LAB);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('1000 allowed connections: one aggregate per deciding rule, connections 1000, the packets and bytes the kernel saw', async () => {
    const before = await reference(target.netns, 'b-to-a');
    const allowBefore = await ruleCounter(ALLOW_RULE, 'x/a');
    let ok = 0;
    const { counts, lost } = await recorded(
      backend.flowSource(target, { ir: () => ir, pollMs: POLL_MS }),
      async () => {
        ok = await connections(labPod('x/b').netns, labPod('x/a').address, 1000, { abortMs: 5000 });
      },
    );
    const after = await reference(target.netns, 'b-to-a');
    const sent = { packets: after.packets - before.packets, bytes: after.bytes - before.bytes };
    expect(ok).toBe(1000);
    // SYN, ACK, the request-less close: more than a packet per connection on the established path.
    expect(sent.packets).toBeGreaterThan(2000);
    expect(await ruleCounter(ALLOW_RULE, 'x/a')).toBe(allowBefore + 1000);

    const byRule = aggregates(between(counts, 'x/b', 'x/a'));
    expect([...byRule.keys()].sort()).toEqual([
      `allow ${ALLOW_RULE} x/a ingress`,
      'allow x/b/egress/default x/b egress',
      `log ${LOG_RULE} x/a ingress`,
    ]);
    for (const key of [`allow ${ALLOW_RULE} x/a ingress`, 'allow x/b/egress/default x/b egress'])
      expect(byRule.get(key), key).toMatchObject({
        protocol: 6,
        sport: 0,
        dport: 80,
        connections: 1000,
        packets: sent.packets,
        bytes: sent.bytes,
      });
    // A Log rule sees what reaches the policy chains: the first packet of each connection.
    expect(byRule.get(`log ${LOG_RULE} x/a ingress`)).toMatchObject({ connections: 1000, packets: 1000 });
    // The drain runs every interval: more than one record, each at most an interval wide.
    expect(between(counts, 'x/b', 'x/a').length).toBeGreaterThan(3);
    expect(lost).toEqual([]);
  }, 60_000);

  it('denied SYNs and pings: one deny aggregate each, with the packets the deciding rule counted', async () => {
    const n = 300;
    const before = await reference(target.netns, 'c-to-a');
    const denyBefore = await ruleCounter(DEFAULT_DENY, 'x/a');
    let ok = -1;
    let replied = true;
    const { counts } = await recorded(
      backend.flowSource(target, { ir: () => ir, pollMs: POLL_MS }),
      async () => {
        ok = await connections(labPod('x/c').netns, labPod('x/a').address, n, { abortMs: 300 });
        replied = await pings(labPod('x/c').netns, labPod('x/a').address, 3);
      },
    );
    expect([ok, replied]).toEqual([0, false]);
    const syns = (await reference(target.netns, 'c-to-a')).packets - before.packets;
    expect(syns).toBe(n);
    // Every SYN and every echo request, dropped by the default deny.
    expect(await ruleCounter(DEFAULT_DENY, 'x/a')).toBe(denyBefore + n + 3);

    const tcp = aggregates(between(counts, 'x/c', 'x/a').filter((e) => e.protocol === 6));
    expect(tcp.get(`deny ${DEFAULT_DENY} x/a ingress`)).toMatchObject({
      dport: 80,
      packets: n,
      connections: n,
    });
    expect(tcp.get('allow x/c/egress/default x/c egress')).toMatchObject({ packets: n, connections: n });
    // Without ports: port 0, whatever bytes 2–3 of the ICMP header held.
    const icmp = aggregates(between(counts, 'x/c', 'x/a').filter((e) => e.protocol === 1));
    expect(icmp.get(`deny ${DEFAULT_DENY} x/a ingress`)).toMatchObject({ dport: 0, packets: 3 });
  }, 60_000);

  it('a whole-table rewrite loses nothing already read and counts what follows from zero', async () => {
    // The kit's drain driven by hand, so the rewrite falls between two reads: the new sets' elements
    // have the old ones' keys and totals just as large, and must still count as new.
    const read = flowCounterReader(target.netns);
    const counts: FlowCountsEvent[] = [];
    const drain = new AggregateDrain(target.node, () => ir, {
      event: (e) => e.kind === 'counts' && counts.push(e),
      lost: () => undefined,
    });
    const client = (): Promise<number> =>
      connections(labPod('x/b').netns, labPod('x/a').address, 100, { abortMs: 5000 });
    const before = await reference(target.netns, 'b-to-a');
    drain.take(read(), Date.now(), false);
    expect(await client()).toBe(100);
    await sleep(POLL_MS);
    drain.take(read(), Date.now());
    await backend.apply(target, ir); // no `previous`: the whole table, new sets
    expect(await client()).toBe(100);
    await sleep(POLL_MS);
    drain.take(read(), Date.now());
    const after = await reference(target.netns, 'b-to-a');
    expect(aggregates(between(counts, 'x/b', 'x/a')).get(`allow ${ALLOW_RULE} x/a ingress`)).toMatchObject({
      connections: 200,
      packets: after.packets - before.packets,
      bytes: after.bytes - before.bytes,
    });
  }, 60_000);

  it('a full set costs records, counted as lost, never a verdict', async () => {
    const tiny = createNftablesBackend({ flowSetSize: 2 });
    await tiny.apply(target, ir);
    try {
      const allowBefore = await ruleCounter(ALLOW_RULE, 'x/a');
      const denyBefore = await ruleCounter(DEFAULT_DENY, 'x/a');
      let allowed = 0;
      let denied = -1;
      const { lost } = await recorded(
        backend.flowSource(target, { ir: () => ir, pollMs: POLL_MS }),
        async () => {
          allowed = await connections(labPod('x/b').netns, labPod('x/a').address, 20, { abortMs: 5000 });
          denied = await connections(labPod('x/c').netns, labPod('x/a').address, 20, { abortMs: 300 });
        },
      );
      expect([allowed, denied]).toEqual([20, 0]);
      expect(await ruleCounter(ALLOW_RULE, 'x/a')).toBe(allowBefore + 20);
      expect(await ruleCounter(DEFAULT_DENY, 'x/a')).toBe(denyBefore + 20);
      // b → a takes the two places (b's egress default, the Log rule); a's allow finds none,
      // nor does any of c's three decisions: 20 × 1 + 20 × 3 updates refused.
      const set = await runInNetnsOrThrow(target.netns, 'nft', [
        '-j',
        'list',
        'set',
        'inet',
        'switchyard',
        'flows4',
      ]);
      const elements = (
        JSON.parse(set.stdout) as { nftables: { set?: { elem?: unknown[] } }[] }
      ).nftables.find((o) => o.set)?.set?.elem;
      expect(elements).toHaveLength(2);
      expect(lost.every((l) => l.where === LOST_AGGREGATE_FULL)).toBe(true);
      expect(lost.reduce((n, l) => n + l.count, 0)).toBe(20 + 60);
    } finally {
      await backend.apply(target, ir);
    }
  }, 60_000);

  it('with flowLogs: false nothing is updated and nothing reported; verdicts are the same', async () => {
    await createNftablesBackend({ flowLogs: false }).apply(target, ir);
    try {
      const table = (await runInNetnsOrThrow(target.netns, 'nft', ['list', 'table', 'inet', 'switchyard']))
        .stdout;
      expect(table).not.toMatch(/\bupdate\b|flows-full|\b(flows|traffic)[46]\b|chain flow-/);
      const denyBefore = await ruleCounter(DEFAULT_DENY, 'x/a');
      let allowed = 0;
      let denied = -1;
      const { counts, lost } = await recorded(
        backend.flowSource(target, { ir: () => ir, pollMs: POLL_MS }),
        async () => {
          allowed = await connections(labPod('x/b').netns, labPod('x/a').address, 20, { abortMs: 5000 });
          denied = await connections(labPod('x/c').netns, labPod('x/a').address, 20, { abortMs: 300 });
        },
      );
      expect([allowed, denied]).toEqual([20, 0]);
      expect(await ruleCounter(DEFAULT_DENY, 'x/a')).toBe(denyBefore + 20);
      expect([counts, lost]).toEqual([[], []]);
    } finally {
      await backend.apply(target, ir);
    }
  }, 60_000);

  it('the reader fails, rather than reporting nothing, when the table is gone', async () => {
    await backend.remove(target);
    try {
      expect(() => flowCounterReader(target.netns)()).toThrow(/No such file or directory/);
    } finally {
      await backend.apply(target, ir);
    }
  });
});

describeKernel('flow aggregates on nftables over IPv6', () => {
  const TAG = `${(process.pid % 10000) + 7}f`;
  const ir = irOf(dualStack(), 'table');
  const backend = createNftablesBackend();
  let lab: NftLab | undefined;

  const v6 = (id: string): string => {
    const a = ir.endpoints.find((e) => e.id === id)?.addresses.find((x) => x.includes(':'));
    if (!a) throw new Error(`${id} has no IPv6 address`);
    return a;
  };

  beforeAll(async () => {
    lab = new NftLab(TAG, ir);
    await lab.up([80]);
    for (const node of ir.nodes) await backend.apply(lab.target(node.name), ir);
    await installReference(lab.netnsOf('node-2'), {
      'api-to-pg': `ip6 saddr ${v6('web/api')} ip6 daddr ${v6('db/pg')} tcp dport 80 ct direction original`,
    });
  }, 120_000);

  afterAll(() => lab?.down());

  it('connections and denied SYNs between dual-stack pods on two nodes, aggregated in flows6 and traffic6', async () => {
    const l = lab as NftLab;
    const node2 = l.target('node-2');
    const before = await reference(node2.netns, 'api-to-pg');
    let ok = 0;
    let denied = -1;
    const { counts } = await recorded(
      backend.flowSource(node2, { ir: () => ir, pollMs: POLL_MS }),
      async () => {
        ok = await connections(l.podNetns('web/api'), v6('db/pg'), 50, { abortMs: 5000 });
        denied = await connections(l.podNetns('web/front'), v6('db/pg'), 20, { abortMs: 300 });
      },
    );
    const after = await reference(node2.netns, 'api-to-pg');
    expect([ok, denied]).toEqual([50, 0]);
    const from = (src: string): Map<string, FlowCountsEvent> =>
      aggregates(counts.filter((e) => e.src === v6(src) && e.dst === v6('db/pg')));
    expect(from('web/api').get('allow np:db/pg-from-api/ingress/0 db/pg ingress')).toMatchObject({
      protocol: 6,
      dport: 80,
      connections: 50,
      packets: after.packets - before.packets,
      bytes: after.bytes - before.bytes,
    });
    expect(from('web/front').get('deny db/pg/ingress/default db/pg ingress')).toMatchObject({
      dport: 80,
      packets: 20,
    });
  }, 60_000);
});
