/**
 * Flows aggregated in ipsets by the iptables backend, with real packets: a one-node lab (`sy-obi…`)
 * where x/a accepts TCP 80 from x/b only and a GlobalPolicy logs everything into namespace x; the
 * backend's flow source reads the node's flow sets. Each case compares what the source emits with
 * counters the kernel keeps on its own:
 *
 * - connections = the packets the deciding rule's own iptables counter saw (only a connection's
 *   first packet reaches policy);
 * - packets and bytes = a mangle POSTROUTING rule the test adds for the same 4-tuple (every
 *   packet of the original direction that was forwarded: the first one and the established ones);
 * - denied packets = a mangle PREROUTING rule counting the SYNs that arrive.
 *
 * The source's interval is longer than any case, so its events are exactly what one drain at
 * stop() found: one event per aggregate. Also: a full flow set changes no verdict and is reported
 * as lost, `--no-flows` renders no set rule, and re-applying keeps the sets' counters. In both
 * policy modes (the rule walk and decision tables render the same flow rules differently placed).
 */
import net from 'node:net';
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
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import type { PolicyMode } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { startConnects } from '../../src/netns/index.js';
import { ALLOW_RULE, DEFAULT_DENY, flowLabYaml, LOG_RULE } from './flow-lab.js';
import { describeKernel } from '../support/kernel.js';

const CONNECTIONS = 1000;
const BATCH = 100;
/** Longer than any case: the only drain is the one stop() makes. */
const NEVER_MS = 600_000;
const TEST_COMMENT = 'sy-test-observe';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Reads what the server sends until it closes; true when something came. */
function answered(fd: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = new net.Socket({ fd, readable: true, writable: true });
    let got = false;
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', () => (got = true));
    sock.on('end', () => finish(got));
    sock.on('error', () => finish(false));
  });
}

/** `count` TCP connections from `netns` to address:port, `BATCH` at a time; returns how many got an answer. */
async function connectMany(
  netns: string,
  address: string,
  port: number,
  count: number,
  timeoutMs = 3000,
): Promise<number> {
  let ok = 0;
  for (let done = 0; done < count; done += BATCH) {
    const n = Math.min(BATCH, count - done);
    const conns = startConnects(
      netns,
      Array.from({ length: n }, () => ({ address, port, protocol: 'TCP' as const })),
    );
    const results = await Promise.all(
      conns.map((c) => ('error' in c ? Promise.resolve(false) : answered(c.fd, timeoutMs))),
    );
    ok += results.filter(Boolean).length;
  }
  return ok;
}

for (const policyMode of ['walk', 'table'] as const satisfies readonly PolicyMode[]) {
  describeKernel(`flows on iptables (${policyMode}): aggregated in ipsets`, () => {
    const LAB = `obi${policyMode[0]}${process.pid % 100000}`;
    let dir = '';
    let up = false;
    let state: LabState;
    let ir: IR;
    let target: NodeTarget;
    const backend = new IptablesBackend();
    const iptables = (): string => `iptables-${backend.mode}`;

    const labPod = (id: string) => {
      const p = state.topology?.pods.find((x) => x.id === id);
      if (!p) throw new Error(`no pod ${id}`);
      return p;
    };
    const address = (id: string): string => labPod(id).address;

    /** Runs `fn` with a flow source started (baseline read) and stopped (one drain); its output. */
    async function observed(
      fn: () => Promise<void>,
      using: IptablesBackend = backend,
    ): Promise<{ counts: FlowCountsEvent[]; lost: { count: number; where: string }[] }> {
      const events: KernelEvent[] = [];
      const lost: { count: number; where: string }[] = [];
      const source: EventSource = using.flowSource(target, { ir: () => ir, pollMs: NEVER_MS });
      await source.start({
        event: (e) => events.push(e),
        lost: (count, where) => lost.push({ count, where }),
      });
      try {
        await fn();
        // The last ACKs and FINs of the closing connections.
        await sleep(300);
      } finally {
        await source.stop();
      }
      return { counts: events.filter((e): e is FlowCountsEvent => e.kind === 'counts'), lost };
    }

    /** A test-owned counting rule in the node's mangle table (removed by `lab down` with the node). */
    async function addCounter(chain: 'PREROUTING' | 'POSTROUTING', match: string[]): Promise<void> {
      await runInNetnsOrThrow(target.netns, iptables(), [
        '-w',
        '-t',
        'mangle',
        '-A',
        chain,
        ...match,
        '-m',
        'comment',
        '--comment',
        TEST_COMMENT,
      ]);
    }

    /** Packets and bytes of the test's counting rules, by chain. */
    async function testCounters(): Promise<Map<string, { packets: number; bytes: number }>> {
      const r = await runInNetnsOrThrow(target.netns, `${iptables()}-save`, ['-c', '-t', 'mangle']);
      const out = new Map<string, { packets: number; bytes: number }>();
      for (const line of r.stdout.split('\n')) {
        const m = /^\[(\d+):(\d+)\] -A (\S+) .*sy-test-observe/.exec(line);
        if (m) out.set(m[3] as string, { packets: Number(m[1]), bytes: Number(m[2]) });
      }
      return out;
    }

    async function testCounter(chain: string): Promise<{ packets: number; bytes: number }> {
      const c = (await testCounters()).get(chain);
      if (!c) throw new Error(`no test counter in ${chain}`);
      return c;
    }

    /** The packets one rule's iptables counters saw, for one endpoint and direction. */
    async function ruleCount(rule: string, endpoint: string): Promise<number> {
      const rows = await backend.counters(target);
      return rows
        .filter((r) => r.rule === rule && r.endpoint === endpoint)
        .reduce((n, r) => n + r.packets, 0);
    }

    async function flowSetNames(): Promise<string[]> {
      const r = await runInNetnsOrThrow(target.netns, 'ipset', ['list', '-n']);
      return r.stdout.split('\n').filter((n) => n.startsWith('sy-flow'));
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'sy-obi-'));
      const file = join(dir, 'lab.yaml');
      writeFileSync(file, flowLabYaml());
      const result = await converge({
        name: LAB,
        model: loadManifests([file]),
        files: [file],
        mode: 'up',
        backend: 'iptables',
        nodeCount: 1,
        policyMode,
        // The test reads the flow sets itself and applies other flow settings: no lab agent.
        agents: false,
      });
      up = true;
      state = result.state;
      ir = state.ir as IR;
      const node = state.topology?.nodes[0];
      if (!node) throw new Error('lab has no node');
      target = { scope: LAB, node: node.name, netns: node.netns };
      await addCounter('POSTROUTING', [
        '-s',
        address('x/b'),
        '-d',
        address('x/a'),
        '-p',
        'tcp',
        '--dport',
        '80',
      ]);
      await addCounter('PREROUTING', [
        '-s',
        address('x/c'),
        '-d',
        address('x/a'),
        '-p',
        'tcp',
        '--syn',
        '--dport',
        '80',
      ]);
    }, 120_000);

    afterAll(async () => {
      if (up) await labDown(LAB);
      rmSync(dir, { recursive: true, force: true });
    }, 60_000);

    it(`${CONNECTIONS} allowed connections: one aggregate per deciding rule, counted as the kernel counted them`, async () => {
      const rulesBefore = {
        allow: await ruleCount(ALLOW_RULE, 'x/a'),
        egress: await ruleCount('x/b/egress/default', 'x/b'),
        log: await ruleCount(LOG_RULE, 'x/a'),
      };
      const before = await testCounter('POSTROUTING');
      let ok = 0;
      const { counts, lost } = await observed(async () => {
        ok = await connectMany(labPod('x/b').netns, address('x/a'), 80, CONNECTIONS);
      });
      const after = await testCounter('POSTROUTING');
      const forwarded = { packets: after.packets - before.packets, bytes: after.bytes - before.bytes };
      const decided = {
        allow: (await ruleCount(ALLOW_RULE, 'x/a')) - rulesBefore.allow,
        egress: (await ruleCount('x/b/egress/default', 'x/b')) - rulesBefore.egress,
        log: (await ruleCount(LOG_RULE, 'x/a')) - rulesBefore.log,
      };
      console.log(
        `iptables ${policyMode}: ${ok} connections, rule counters ${JSON.stringify(decided)}, ` +
          `forwarded ${forwarded.packets} packets / ${forwarded.bytes} bytes`,
      );
      expect(ok).toBe(CONNECTIONS);
      expect(lost).toEqual([]);
      const between = counts.filter(
        (e) => e.src === address('x/b') && e.dst === address('x/a') && e.dport === 80,
      );
      const find = (verdict: string, rule: string) =>
        between.filter((e) => e.verdict === verdict && e.rule === rule);
      const ingress = find('allow', ALLOW_RULE);
      const egress = find('allow', 'x/b/egress/default');
      const logged = find('log', LOG_RULE);
      expect(ingress).toHaveLength(1);
      expect(egress).toHaveLength(1);
      expect(logged).toHaveLength(1);
      expect(ingress[0]).toMatchObject({ endpoint: 'x/a', direction: 'ingress', protocol: 6, sport: 0 });
      expect(egress[0]).toMatchObject({ endpoint: 'x/b', direction: 'egress' });
      expect(logged[0]).toMatchObject({ endpoint: 'x/a', direction: 'ingress' });
      // Connections: what each rule's own counter decided, i.e. one first packet per connection.
      expect(decided.allow).toBe(CONNECTIONS);
      expect(ingress[0]?.connections).toBe(decided.allow);
      expect(egress[0]?.connections).toBe(decided.egress);
      expect(logged[0]?.connections).toBe(decided.log);
      // Packets and bytes: every forwarded packet of the original direction, decided or established.
      expect(ingress[0]?.packets).toBe(forwarded.packets);
      expect(ingress[0]?.bytes).toBe(forwarded.bytes);
      expect(egress[0]?.packets).toBe(forwarded.packets);
      expect(egress[0]?.bytes).toBe(forwarded.bytes);
      expect(forwarded.packets).toBeGreaterThan(3 * CONNECTIONS);
      // Nothing else between them: no deny, no second aggregate per rule.
      expect(between).toHaveLength(3);
    }, 120_000);

    it('denied SYNs: one deny aggregate whose packets are the SYNs that arrived and the rule counted', async () => {
      const ruleBefore = await ruleCount(DEFAULT_DENY, 'x/a');
      const before = await testCounter('PREROUTING');
      let ok = 0;
      const { counts } = await observed(async () => {
        // Each attempt sends its SYN and one retransmission (after 1 s) before giving up.
        ok = await connectMany(labPod('x/c').netns, address('x/a'), 80, 20, 1500);
      });
      const syns = (await testCounter('PREROUTING')).packets - before.packets;
      const decided = (await ruleCount(DEFAULT_DENY, 'x/a')) - ruleBefore;
      console.log(`iptables ${policyMode}: ${syns} denied SYNs, rule counter ${decided}`);
      expect(ok).toBe(0);
      expect(syns).toBeGreaterThanOrEqual(20);
      const denied = counts.filter((e) => e.verdict === 'deny' && e.src === address('x/c'));
      expect(denied).toHaveLength(1);
      expect(denied[0]).toMatchObject({
        rule: DEFAULT_DENY,
        endpoint: 'x/a',
        direction: 'ingress',
        dst: address('x/a'),
        dport: 80,
        protocol: 6,
      });
      expect(denied[0]?.packets).toBe(syns);
      expect(decided).toBe(syns);
      expect(
        counts.filter((e) => e.verdict === 'allow' && e.direction === 'ingress' && e.src === address('x/c')),
      ).toEqual([]);
    }, 60_000);

    it('a full flow set changes no verdict; what it could not take is reported as lost', async () => {
      const tiny = new IptablesBackend({ flowSetMaxElem: 1 });
      // Sets keep their size across applies: drop them (flows off), then create them tiny.
      await new IptablesBackend({ flowLogs: false }).apply(target, ir);
      await tiny.apply(target, ir);
      try {
        const reached = { ab: 0, bc: 0, ca: 0 };
        const { counts, lost } = await observed(async () => {
          // x/b's egress set takes b→a first; b→c finds it full (and the traffic set too).
          reached.ab = await connectMany(labPod('x/b').netns, address('x/a'), 80, 3);
          reached.bc = await connectMany(labPod('x/b').netns, address('x/c'), 80, 5);
          reached.ca = await connectMany(labPod('x/c').netns, address('x/a'), 80, 2, 500);
        }, tiny);
        expect(reached).toEqual({ ab: 3, bc: 5, ca: 0 });
        const full = lost.filter((l) => l.where === LOST_AGGREGATE_FULL).reduce((n, l) => n + l.count, 0);
        // Five first packets not aggregated for x/b's egress, plus their established packets.
        expect(full).toBeGreaterThan(5);
        const bc = counts.filter((e) => e.src === address('x/b') && e.dst === address('x/c'));
        expect(bc.map((e) => [e.rule, e.connections])).toEqual([['x/c/ingress/default', 5]]);
        expect(counts.find((e) => e.rule === 'x/b/egress/default')?.connections).toBe(3);
      } finally {
        await new IptablesBackend({ flowLogs: false }).apply(target, ir);
        await backend.apply(target, ir);
      }
    }, 60_000);

    it('--no-flows renders no set rule and no flow set, and verdicts stay', async () => {
      const off = new IptablesBackend({ flowLogs: false });
      await off.apply(target, ir);
      try {
        for (const family of ['iptables', 'ip6tables']) {
          const saved = await runInNetnsOrThrow(target.netns, `${family}-${backend.mode}-save`, [
            '-t',
            'filter',
          ]);
          expect(saved.stdout).toContain('SY-FORWARD');
          expect(saved.stdout).not.toMatch(/sy-flow|--add-set|SY-FLOWFULL|NFLOG/);
        }
        expect(await flowSetNames()).toEqual([]);
        const { counts } = await observed(async () => {
          expect(await connectMany(labPod('x/b').netns, address('x/a'), 80, 3)).toBe(3);
          expect(await connectMany(labPod('x/c').netns, address('x/a'), 80, 2, 500)).toBe(0);
        }, off);
        expect(counts).toEqual([]);
      } finally {
        await backend.apply(target, ir);
      }
      expect((await flowSetNames()).length).toBeGreaterThan(0);
    }, 60_000);

    it('re-applying (even as an agent restart does, without the previous IR) keeps the flow sets and their counters', async () => {
      await connectMany(labPod('x/b').netns, address('x/a'), 80, 5);
      const save = async (): Promise<string[]> =>
        (await runInNetnsOrThrow(target.netns, 'ipset', ['save', 'sy-flow4-traffic'])).stdout
          .split('\n')
          .filter((l) => l.startsWith('add '))
          .map((l) => l.replace(/ timeout \d+/, ''));
      const before = await save();
      expect(before.length).toBeGreaterThan(0);
      const result = await backend.apply(target, ir);
      expect(result.changed.filter((c) => c.includes('sy-flow'))).toEqual([]);
      expect(await save()).toEqual(before);
    }, 60_000);
  });
}
