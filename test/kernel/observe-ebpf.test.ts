/**
 * Flow aggregates of the eBPF backend with real traffic in a lab, drained by createEbpfFlowSource:
 * 1000 allowed TCP connections make one allow aggregate per hook whose packets and bytes equal what
 * the server pod's IP stack received (counted by the kernel, not by us); denied datagrams sent
 * while no source runs make one deny aggregate equal to the rule's counter, delivered by the first
 * drain of a source started later; a long connection shows up drain after drain; `flowLogs: false`
 * leaves the map untouched (no reload) while Log rules still aggregate; a full map counts and
 * reports what it refused; a node pinned by a version with the ring buffer gets the new maps; a
 * source for a node without pins waits quietly and leaves nothing open. Plus the cost of the aggregate update per packet (PROG_TEST_RUN).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { codecs, Link, PerCpuMap, RingBufMap } from '../../src/bpf/index.js';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import { createEbpfBackend } from '../../src/dataplane/ebpf/index.js';
import {
  flowKey,
  flowValue,
  MAP,
  NODE_CONFIG_FLAG,
  type FlowKey,
  type FlowValue,
} from '../../src/dataplane/ebpf/layout.js';
import { FLOW_CAPACITY, mapPinPath, readFlowsLost } from '../../src/dataplane/ebpf/maps.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import {
  LOST_AGGREGATE_FULL,
  type EventSource,
  type FlowCountsEvent,
  type KernelEvent,
} from '../../src/dataplane/events.js';
import { createEbpfFlowSource } from '../../src/dataplane/ebpf/flow-source.js';
import { FlowTable } from '../../src/observe/flows.js';
import { FIXTURES_DIR } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';
import {
  globalPolicy,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  toYaml,
  compileIR,
} from '../support/manifests.js';
import { OfflineNode, skbContext } from '../../src/dataplane/ebpf/offline-node.js';
import { frame } from './ebpf-frames.js';

const LAB = `ebf-${process.pid % 10000}`;
const MODEL = join(FIXTURES_DIR, 'xyz/model.yaml');
const PROBE_TIMEOUT_MS = 500;
const ECHO_PORT = 8080;
/** Drains in these tests (the agent's default is FLOW_INTERVAL_MS). */
const POLL_MS = 200;
/** Ethernet header: in the length the tcx programs see, not in the IP stack's octets. */
const ETH_HLEN = 14;
/**
 * Draining deletes what it reads: the sources of this test must be the map's only readers, so the
 * lab runs without per-node agents (which would drain the same maps). Spread, so the option is
 * simply ignored where converge does not know it.
 */
const NO_AGENTS = { agents: false };

/** x/a admits x/b on TCP 80 and 8080; everything else to x/a is denied by the policy's default. */
const ALLOW_B = networkPolicy('x', 'allow-b', {
  podSelector: { matchLabels: { pod: 'a' } },
  policyTypes: ['Ingress'],
  ingress: [
    {
      from: [{ podSelector: { matchLabels: { pod: 'b' } } }],
      ports: [{ port: 80 }, { port: ECHO_PORT }],
    },
  ],
});

/** Every pod of namespace y refuses all ingress. */
const DENY_Y = networkPolicy('y', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] });

/** Logs TCP to x/a, then hands on to the Kubernetes tier. */
const AUDIT = globalPolicy('audit', {
  order: 1,
  selector: { matchLabels: { pod: 'a' } },
  namespaceSelector: { matchLabels: { ns: 'x' } },
  types: ['Ingress'],
  ingress: [{ action: 'Log', protocol: 'TCP' }, { action: 'Pass' }],
});

class Collector {
  readonly events: KernelEvent[] = [];
  readonly lost = new Map<string, number>();
  readonly sink = {
    event: (e: KernelEvent): void => void this.events.push(e),
    lost: (count: number, where: string): void =>
      void this.lost.set(where, (this.lost.get(where) ?? 0) + count),
  };
  counts(): FlowCountsEvent[] {
    return this.events.filter((e): e is FlowCountsEvent => e.kind === 'counts');
  }
}

/** The deltas of every drain of the matching aggregates, added up. */
function total(events: readonly FlowCountsEvent[]): { packets: number; bytes: number; connections: number } {
  return events.reduce(
    (t, e) => ({
      packets: t.packets + e.packets,
      bytes: t.bytes + e.bytes,
      connections: t.connections + e.connections,
    }),
    { packets: 0, bytes: 0, connections: 0 },
  );
}

/** Distinct aggregates (everything but the counts) among `events`. */
function aggregates(events: readonly FlowCountsEvent[]): string[] {
  return [
    ...new Set(
      events.map((e) =>
        [e.endpoint, e.direction, e.verdict, e.rule, e.protocol, e.src, e.dst, e.sport, e.dport].join(' '),
      ),
    ),
  ];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** This process's open fds, each as `number:what it refers to`. */
function openFds(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.add(`${fd}:${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // closed while listing
    }
  }
  return out;
}

/** Fds open now that were not in `before`. */
function newFds(before: ReadonlySet<string>): string[] {
  return [...openFds()].filter((fd) => !before.has(fd));
}

/** A node script run inside a pod's network namespace; resolves with its stdout. */
function runIn(netns: string, script: string, ...args: string[]): string {
  const r = spawnSync('ip', ['netns', 'exec', netns, process.execPath, '-e', script, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.status !== 0) throw new Error(`script in ${netns} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** IPv4 packets and octets a network namespace's IP stack received (its /proc/net MIBs). */
function ipReceived(netns: string): { packets: number; octets: number } {
  const read = (file: string, group: string, field: string): number => {
    const r = spawnSync('ip', ['netns', 'exec', netns, 'cat', file], { encoding: 'utf8' });
    const lines = r.stdout.split('\n').filter((l) => l.startsWith(`${group}:`));
    const [names = '', values = ''] = lines;
    const i = names.split(/\s+/).indexOf(field);
    const v = Number(values.split(/\s+/)[i]);
    if (i < 0 || !Number.isFinite(v)) throw new Error(`no ${group} ${field} in ${file} of ${netns}`);
    return v;
  };
  return {
    packets: read('/proc/net/snmp', 'Ip', 'InReceives'),
    octets: read('/proc/net/netstat', 'IpExt', 'InOctets'),
  };
}

/**
 * `count` TCP connections to address:port, `parallel` at a time; each reads the answer, closes
 * after the server did, and counts when fully closed. Prints how many completed.
 */
const CONNECT_SCRIPT = `
  const net = require('node:net');
  const [address, port, count, parallel] = process.argv.slice(1).map((v, i) => (i ? +v : v));
  let started = 0, done = 0, ok = 0;
  const next = () => {
    if (started >= count) { if (done === count) console.log(ok); return; }
    started++;
    const s = net.connect(port, address);
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('end', () => s.end());
    s.on('close', (hadError) => { done++; if (!hadError) ok++; next(); });
  };
  for (let i = 0; i < parallel; i++) next();`;

/** One UDP datagram to each of the ports 1…count of address, from one socket. */
const SPREAD_SCRIPT = `
  const s = require('node:dgram').createSocket('udp4');
  const [address, count] = process.argv.slice(1).map((v, i) => (i ? +v : v));
  const msg = Buffer.alloc(8);
  let port = 1;
  const burst = () => { for (let i = 0; i < 500 && port <= count; i++, port++) s.send(msg, port, address); if (port <= count) setImmediate(burst); else setTimeout(() => s.close(), 200); };
  burst();`;

/** `count` UDP datagrams of `size` bytes from one socket to address:port, then a short pause. */
const DATAGRAMS_SCRIPT = `
  const s = require('node:dgram').createSocket('udp4');
  const [address, port, count, size] = process.argv.slice(1).map((v, i) => (i ? +v : v));
  const msg = Buffer.alloc(size);
  let n = 0;
  const burst = () => { for (let i = 0; i < 200 && n < count; i++, n++) s.send(msg, port, address); if (n < count) setImmediate(burst); else setTimeout(() => s.close(), 200); };
  burst();`;

describeKernel('observe: eBPF flow aggregates in the lab', () => {
  let state: LabState;
  let dir: string;

  const targets = (): NodeTarget[] =>
    (state.topology?.nodes ?? []).map((n) => ({ scope: LAB, node: n.name, netns: n.netns }));
  const pod = (id: string): { netns: string; address: string; node: string } => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };
  const targetOf = (node: string): NodeTarget => {
    const t = targets().find((x) => x.node === node);
    if (!t) throw new Error(`no node ${node}`);
    return t;
  };

  /** Sources on every node into `c`, stopped (a final drain each) by the returned function. */
  async function startSources(c: Collector, pollMs = POLL_MS): Promise<() => Promise<void>> {
    const sources: EventSource[] = [];
    for (const t of targets()) {
      const s = createEbpfFlowSource(t, { pollMs });
      await s.start(c.sink);
      sources.push(s);
    }
    return async () => {
      for (const s of sources) await s.stop();
    };
  }

  /** Empties every node's `flows` map (what earlier traffic left after its sources stopped). */
  function drainAll(): void {
    for (const t of targets()) {
      const m = PerCpuMap.fromPin(mapPinPath(nodeDir(t.scope, t.node), MAP.flows), flowKey, flowValue);
      try {
        m.lookupAndDeleteBatch();
      } finally {
        m.close();
      }
    }
  }

  /** The node's `flows` map, read without draining it. */
  function peekFlows(t: NodeTarget): [FlowKey, FlowValue[]][] {
    const m = PerCpuMap.fromPin(mapPinPath(nodeDir(t.scope, t.node), MAP.flows), flowKey, flowValue);
    try {
      return m.lookupBatch();
    } finally {
      m.close();
    }
  }

  async function apply(manifests: Parameters<typeof toYaml>[0]): Promise<void> {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, toYaml(manifests));
    const files = [MODEL, file];
    state = (await converge({ name: LAB, model: loadManifests(files), files, mode: 'apply', ...NO_AGENTS }))
      .state;
  }

  function programIds(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of targets()) {
      const links = join(nodeDir(t.scope, t.node), 'links');
      for (const name of readdirSync(links)) {
        const link = Link.fromPin(join(links, name));
        out[`${t.node}/${name}`] = link.info().programId;
        link.close();
      }
    }
    return out;
  }

  const ruleOf = (endpoint: string, direction: 'ingress' | 'egress', index = 0): string => {
    const rs = state.ir.ruleSets.find((r) => r.endpoint === endpoint && r.direction === direction);
    const rule = rs?.kubernetesRules[index];
    if (!rule) throw new Error(`no Kubernetes rule ${index} for ${endpoint} ${direction}`);
    return rule.id;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-ebf-observe-'));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, toYaml([ALLOW_B]));
    const files = [MODEL, file];
    state = (
      await converge({
        name: LAB,
        model: loadManifests(files),
        files,
        mode: 'up',
        backend: 'ebpf',
        ...NO_AGENTS,
      })
    ).state;
  });

  afterAll(async () => {
    try {
      await labDown(LAB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(
    '1000 allowed TCP connections: one aggregate per hook, packets and bytes as the server received them',
    { timeout: 120_000 },
    async () => {
      const a = pod('x/a');
      const b = pod('x/b');
      const c = new Collector();
      const stop = await startSources(c);
      let completed: number;
      let received: { packets: number; octets: number };
      try {
        const before = ipReceived(a.netns);
        completed = Number(runIn(b.netns, CONNECT_SCRIPT, a.address, '80', '1000', '50').trim());
        // The last ACKs of the closes.
        await sleep(300);
        const after = ipReceived(a.netns);
        received = { packets: after.packets - before.packets, octets: after.octets - before.octets };
      } finally {
        await stop();
      }
      expect(completed).toBe(1000);
      const tuple = (e: FlowCountsEvent): boolean =>
        e.src === b.address && e.dst === a.address && e.protocol === 6 && e.dport === 80;
      const server = c.counts().filter((e) => tuple(e) && e.endpoint === 'x/a' && e.direction === 'ingress');
      const client = c.counts().filter((e) => tuple(e) && e.endpoint === 'x/b' && e.direction === 'egress');
      // One aggregate each (possibly over several drains): the rule that allowed, no source port.
      expect(aggregates(server)).toEqual([
        `x/a ingress allow ${ruleOf('x/a', 'ingress')} 6 ${b.address} ${a.address} 0 80`,
      ]);
      expect(aggregates(client)).toEqual([
        `x/b egress allow x/b/egress/default 6 ${b.address} ${a.address} 0 80`,
      ]);
      const counted = total(server);
      console.log(
        `1000 connections: aggregate ${JSON.stringify(counted)} over ${server.length} drains; ` +
          `server IP stack received ${received.packets} packets, ${received.octets} octets`,
      );
      expect(counted.connections).toBe(1000);
      // Nothing else reached x/a meanwhile: every IPv4 packet it received is one of these, and the
      // programs saw each with its Ethernet header.
      expect(counted.packets).toBe(received.packets);
      expect(counted.bytes).toBe(received.octets + ETH_HLEN * received.packets);
      // The client's egress hook passed the same packets.
      expect(total(client)).toEqual(counted);
      expect(
        server.every((e) => e.firstSeen <= e.lastSeen && Math.abs(e.lastSeen - Date.now()) < 60_000),
      ).toBe(true);
      expect(c.lost.size).toBe(0);

      // The flow table adds the drains into one record.
      const table = new FlowTable({ node: a.node });
      for (const e of server) table.event(e);
      const records = table.list({ pod: 'x/a', verdict: 'allow' });
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ connections: 1000, packets: counted.packets, sport: 0, dport: 80 });
    },
  );

  it('denied datagrams sent while no source runs: one deny aggregate equal to the rule counter, drained later', async () => {
    const a = pod('x/a');
    const c = pod('x/c');
    const backend = createEbpfBackend();
    const defaultCounter = async (): Promise<number> =>
      (await backend.counters(targetOf(a.node))).find(
        (r) => r.rule === 'x/a/ingress/default' && r.endpoint === 'x/a',
      )?.packets ?? 0;
    const counterBefore = await defaultCounter();
    const N = 500;
    const SIZE = 100;
    // UDP 80 from x/c: x/a's policy admits only x/b, on TCP.
    runIn(c.netns, DATAGRAMS_SCRIPT, a.address, '80', String(N), String(SIZE));
    const counterDelta = (await defaultCounter()) - counterBefore;

    const seen = new Collector();
    const stop = await startSources(seen);
    try {
      await until('the deny aggregate', () =>
        seen.counts().some((e) => e.verdict === 'deny' && e.src === c.address && e.dst === a.address),
      );
    } finally {
      await stop();
    }
    const denied = seen.counts().filter((e) => e.verdict === 'deny' && e.src === c.address);
    expect(aggregates(denied)).toEqual([
      `x/a ingress deny x/a/ingress/default 17 ${c.address} ${a.address} 0 80`,
    ]);
    // Ethernet, IP and UDP headers around each payload; every datagram would have opened a flow.
    expect(total(denied)).toEqual({ packets: N, bytes: N * (ETH_HLEN + 20 + 8 + SIZE), connections: N });
    expect(counterDelta).toBe(N);
    // x/c's egress allowed them: one connection (the first made the conntrack entry), every packet.
    const allowed = seen.counts().filter((e) => e.src === c.address && e.endpoint === 'x/c');
    expect(aggregates(allowed)).toEqual([
      `x/c egress allow x/c/egress/default 17 ${c.address} ${a.address} 0 80`,
    ]);
    expect(total(allowed)).toEqual({ packets: N, bytes: N * (ETH_HLEN + 20 + 8 + SIZE), connections: 1 });
  });

  it('reports a long connection drain after drain, its connection once', { timeout: 60_000 }, async () => {
    const a = pod('x/a');
    const b = pod('x/b');
    const c = new Collector();
    const stop = await startSources(c);
    const echo = new EchoPair(a.netns, b.netns, a.address, ECHO_PORT);
    const ours = (): FlowCountsEvent[] =>
      c.counts().filter((e) => e.endpoint === 'x/a' && e.dport === ECHO_PORT && e.src === b.address);
    try {
      await echo.start();
      await echo.roundTrip(1000);
      await until('a first drain', () => total(ours()).bytes > 1000);
      const drains = ours().length;
      for (let i = 0; i < 5; i++) await echo.roundTrip(4000);
      await until('later drains', () => total(ours()).bytes >= 1000 + 5 * 4000 && ours().length > drains);
    } finally {
      echo.stop();
      await stop();
    }
    expect(total(ours()).connections).toBe(1);
    expect(ours().every((e) => e.verdict === 'allow' && e.protocol === 6)).toBe(true);
  });

  it('flowLogs: false leaves the map untouched and reloads nothing; Log rules aggregate either way', async () => {
    const before = programIds();
    const quiet = createEbpfBackend({ flowLogs: false });
    for (const t of targets()) expect((await quiet.apply(t, state.ir, state.ir)).changed).toEqual(['config']);
    expect(programIds()).toEqual(before);
    drainAll();

    const a = pod('x/a');
    const b = pod('x/b');
    for (const from of ['x/b', 'x/c'])
      await measureReach(LAB, { port: 80, protocol: 'TCP', from: [from], timeoutMs: PROBE_TIMEOUT_MS });
    runIn(pod('x/c').netns, DATAGRAMS_SCRIPT, a.address, '80', '50', '10');
    // Allowed and denied traffic, established packets and replies: not one aggregate.
    for (const t of targets()) expect(peekFlows(t)).toEqual([]);

    // A Log rule is policy: it aggregates with flows off too (and nothing else does).
    await apply([ALLOW_B, AUDIT]);
    for (const t of targets()) await quiet.apply(t, state.ir, state.ir);
    const logged = new Collector();
    let stop = await startSources(logged);
    try {
      for (const from of ['x/b', 'x/c'])
        await measureReach(LAB, { port: 80, protocol: 'TCP', from: [from], timeoutMs: PROBE_TIMEOUT_MS });
    } finally {
      await stop();
    }
    const logRule = state.ir.ruleSets.find((r) => r.endpoint === 'x/a' && r.direction === 'ingress')
      ?.globalRules[0]?.id;
    const logs = logged.counts();
    expect(logs.length).toBeGreaterThanOrEqual(2);
    expect(logs.every((e) => e.verdict === 'log' && e.rule === logRule && e.dst === a.address)).toBe(true);
    expect(logs.some((e) => e.src === b.address)).toBe(true);
    expect(logs.some((e) => e.src === pod('x/c').address)).toBe(true);

    // And back on, still without a reload.
    const ids = programIds();
    for (const t of targets())
      expect((await createEbpfBackend().apply(t, state.ir, state.ir)).changed).toEqual(['config']);
    expect(programIds()).toEqual(ids);
    const on = new Collector();
    stop = await startSources(on);
    try {
      await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b'], timeoutMs: PROBE_TIMEOUT_MS });
      await until('allow aggregates', () =>
        on.counts().some((e) => e.verdict === 'allow' && e.endpoint === 'x/a' && e.src === b.address),
      );
    } finally {
      await stop();
    }
    await apply([ALLOW_B]);
  });

  it('counts and reports the aggregates a full map refuses', { timeout: 120_000 }, async () => {
    await apply([ALLOW_B, DENY_Y]);
    const sender = pod('x/c');
    const t = targetOf(sender.node);
    const kernelLost = (): number => {
      const pin = mapPinPath(nodeDir(t.scope, t.node), MAP.flowsLost);
      const m = PerCpuMap.fromPin(pin, codecs.u32, codecs.u64);
      try {
        return Number(readFlowsLost(m));
      } finally {
        m.close();
      }
    };
    // Only the sender's node is drained, and only at stop(): the datagrams below all meet its map.
    const c = new Collector();
    const source = createEbpfFlowSource(t, { pollMs: 600_000 });
    await source.start(c.sink);
    const lostBefore = kernelLost();
    // One datagram to each of as many ports of two denied pods: an aggregate each at x/c's egress.
    const perTarget = Math.ceil((FLOW_CAPACITY + 5000) / 2);
    try {
      for (const target of ['x/a', 'y/a'])
        runIn(sender.netns, SPREAD_SCRIPT, pod(target).address, String(perTarget));
    } finally {
      await source.stop();
    }
    const lost = kernelLost() - lostBefore;
    console.log(
      `full map: ${2 * perTarget} datagrams to distinct ports, ${c.counts().length} aggregates drained from ${t.node}, ${lost} refused`,
    );
    expect(c.counts()).toHaveLength(FLOW_CAPACITY);
    // x/c's egress allowed every datagram; x/a's ingress denied them where it shares the node.
    expect(c.counts().filter((e) => e.endpoint === 'x/c' && e.verdict === 'allow').length).toBeGreaterThan(0);
    expect(lost).toBeGreaterThanOrEqual(2 * perTarget - FLOW_CAPACITY);
    expect(c.lost.get(LOST_AGGREGATE_FULL)).toBe(lost);
    // Drained, the map takes aggregates again.
    const after = new Collector();
    const stop = await startSources(after);
    try {
      runIn(sender.netns, DATAGRAMS_SCRIPT, pod('x/a').address, '9', '3', '10');
      await until('a new aggregate', () =>
        after.counts().some((e) => e.src === sender.address && e.dport === 9),
      );
    } finally {
      await stop();
    }
    expect(after.lost.get(LOST_AGGREGATE_FULL) ?? 0).toBe(0);
    await apply([ALLOW_B]);
  });

  it('gives a node pinned before aggregation its maps at the next apply, and drops the ring buffer pins', async () => {
    const t = targetOf(pod('x/a').node);
    const maps = join(nodeDir(t.scope, t.node), 'maps');
    // What an older version left: a ring buffer and its lost counter, no flows maps.
    for (const name of [MAP.flows, MAP.flowsLost]) rmSync(join(maps, name));
    const ring = RingBufMap.create({ name: 'sy_events', size: 4096 });
    const lost = PerCpuMap.create({
      type: 'percpu_array',
      key: codecs.u32,
      value: codecs.u64,
      maxEntries: 1,
    });
    try {
      ring.pin(join(maps, 'events'));
      lost.pin(join(maps, 'events_lost'));
    } finally {
      ring.close();
      lost.close();
    }
    const before = programIds();
    const changed = (await createEbpfBackend().apply(t, state.ir, state.ir)).changed;
    // Every program of the node is reloaded against the new maps; the retired pins are gone.
    expect(changed.filter((c) => c.startsWith('program:')).length).toBeGreaterThan(0);
    const names = readdirSync(maps);
    expect(names).toEqual(expect.arrayContaining([MAP.flows, MAP.flowsLost]));
    expect(names).not.toContain('events');
    expect(names).not.toContain('events_lost');
    const after = programIds();
    for (const link of Object.keys(before).filter((l) => l.startsWith(`${t.node}/tcx-`)))
      expect(after[link], link).not.toBe(before[link]);

    const c = new Collector();
    const stop = await startSources(c);
    try {
      await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b'], timeoutMs: PROBE_TIMEOUT_MS });
      await until('allow aggregates in the new map', () =>
        c.counts().some((e) => e.verdict === 'allow' && e.endpoint === 'x/a' && e.src === pod('x/b').address),
      );
    } finally {
      await stop();
    }
  });

  it('waits quietly for a node without pins and leaves no fd or timer behind', async () => {
    // Other fds of this process may close meanwhile (the lab's); none may be left open.
    const fds = openFds();
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const timersBefore = timers();
    const c = new Collector();
    const ghost = createEbpfFlowSource({ scope: LAB, node: 'not-yet', netns: 'sy-ebf-none' });
    await ghost.start(c.sink);
    await sleep(1200);
    await ghost.stop();
    expect(c.events).toEqual([]);
    expect(newFds(fds)).toEqual([]);

    // A real node: open, drain, stop — and every fd goes with it.
    const t = targets()[0] as NodeTarget;
    const s = createEbpfFlowSource(t);
    await s.start(c.sink);
    expect(newFds(fds)).not.toEqual([]);
    await s.stop();
    await s.stop();
    expect(newFds(fds)).toEqual([]);
    expect(timers()).toBeLessThanOrEqual(timersBefore);
  });
});

describeKernel('observe: cost of flow aggregates (PROG_TEST_RUN)', () => {
  it('measures a denied packet and an established one with flows off and on', () => {
    const A = '198.18.0.10';
    const B = '198.18.0.11';
    const ir = compileIR(
      modelOf([
        namespace('x'),
        pod('x', 'a', { labels: { pod: 'a' }, ip: A, node: 'n1' }),
        pod('x', 'b', { labels: { pod: 'b' }, ip: B, node: 'n1' }),
        networkPolicy('x', 'deny', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Ingress'] }),
      ]),
    );
    const h = new OfflineNode(ir, 'n1');
    const REPEAT = 2000;
    try {
      const run = (direction: 'ingress' | 'egress', data: Buffer): number =>
        h
          .program('x/a', direction)
          .testRun({ data, repeat: REPEAT, context: skbContext(), contextOutSize: 0 }).durationNs;
      const denied = frame({ src: B, dst: A, protocol: 'TCP', dport: 80 });
      // x/a's egress is open: a first packet makes the entry, the repeats take the established path.
      const established = frame({ src: A, dst: B, protocol: 'TCP', sport: 40000, dport: 80, tcpFlags: 0x10 });
      const results: Record<string, number[]> = {
        deniedOff: [],
        deniedOn: [],
        establishedOff: [],
        establishedOn: [],
      };
      for (let i = 0; i < 5; i++) {
        for (const on of [false, true]) {
          h.maps.config.update(0, { flags: on ? NODE_CONFIG_FLAG.flowEvents : 0, pad: 0 });
          results[on ? 'deniedOn' : 'deniedOff']?.push(run('ingress', denied));
          results[on ? 'establishedOn' : 'establishedOff']?.push(run('egress', established));
        }
      }
      // One aggregate each, every repeat of the runs with flows on in it.
      const drained = h.maps.flows.lookupAndDeleteBatch();
      expect(drained).toHaveLength(2);
      const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
      console.log(
        `ns/packet (PROG_TEST_RUN, repeat ${REPEAT}, median of 5): denied: flows off ${median(results.deniedOff ?? [])}, on ${median(results.deniedOn ?? [])}; ` +
          `established: off ${median(results.establishedOff ?? [])}, on ${median(results.establishedOn ?? [])}`,
      );
    } finally {
      h.close();
    }
  });
});

/** A TCP echo server in one pod and a client in another that keeps one connection open. */
class EchoPair {
  private server: ChildProcess | undefined;
  private client: ChildProcess | undefined;
  private buffered = '';
  private waiter: (() => void) | undefined;

  constructor(
    private readonly serverNetns: string,
    private readonly clientNetns: string,
    private readonly address: string,
    private readonly port: number,
  ) {}

  private run(netns: string, script: string, ...args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script, ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
  }

  async start(): Promise<void> {
    this.server = this.run(
      this.serverNetns,
      `require('node:net').createServer((s) => s.pipe(s)).listen(+process.argv[2], process.argv[1], () => console.log('listening'));`,
      this.address,
      String(this.port),
    );
    await this.line(this.server, 'listening');
    this.client = this.run(
      this.clientNetns,
      `const s = require('node:net').connect(+process.argv[2], process.argv[1], () => console.log('connected'));
       s.on('data', (d) => process.stdout.write('.'.repeat(d.length)));
       process.stdin.on('data', (d) => s.write(Buffer.alloc(+d.toString().trim(), 120)));`,
      this.address,
      String(this.port),
    );
    await this.line(this.client, 'connected');
    this.client.stdout?.on('data', (d: Buffer) => {
      this.buffered += d.toString();
      this.waiter?.();
    });
  }

  private line(child: ChildProcess, text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${text}`)), 10_000);
      const onData = (d: Buffer): void => {
        if (d.toString().includes(text)) {
          clearTimeout(timer);
          child.stdout?.off('data', onData);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
    });
  }

  /** Sends `bytes` and waits until all of them came back. */
  async roundTrip(bytes: number): Promise<void> {
    this.buffered = '';
    this.client?.stdin?.write(`${bytes}\n`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo of ${bytes} bytes timed out`)), 5000);
      this.waiter = () => {
        if (this.buffered.length >= bytes) {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        }
      };
      this.waiter();
    });
  }

  stop(): void {
    for (const c of [this.client, this.server]) if (c && c.exitCode === null) c.kill('SIGKILL');
  }
}
