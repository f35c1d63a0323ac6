/**
 * Flow events of the eBPF backend with real traffic in a lab: the ring buffer records of the
 * policy programs read by createEbpfEventSource — an allowed connection names the deciding rule
 * and endpoint, denied packets the NetworkPolicy default, Log rules report whatever the flowLogs
 * switch says (and flipping it reloads nothing), conntrack totals grow with traffic and end when
 * entries go, a ring buffer nobody reads overflows into the counted loss, and a source for a node
 * without pins waits quietly and leaves nothing open. Plus the cost of a denied packet's event
 * (PROG_TEST_RUN).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfMap, Link, RingBufReader } from '../../src/bpf/index.js';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import { createEbpfBackend } from '../../src/dataplane/ebpf/index.js';
import { ctKey, ctValue, MAP, NODE_CONFIG_FLAG } from '../../src/dataplane/ebpf/layout.js';
import { EVENTS_BYTES, mapPinPath } from '../../src/dataplane/ebpf/maps.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import type { ConnectionEvent, EventSource, KernelEvent, VerdictEvent } from '../../src/dataplane/events.js';
import { createEbpfEventSource, LOST_RING_BUFFER } from '../../src/dataplane/ebpf/flow-source.js';
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
/**
 * A ring buffer has one consumer position: the sources of this test must be its only reader, so
 * the lab runs without per-node agents (which would read the same buffer). Spread, so the option
 * is simply ignored where converge does not know it.
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
  verdicts(): VerdictEvent[] {
    return this.events.filter((e): e is VerdictEvent => e.kind === 'verdict');
  }
  connections(): ConnectionEvent[] {
    return this.events.filter((e): e is ConnectionEvent => e.kind === 'connection');
  }
  clear(): void {
    this.events.length = 0;
    this.lost.clear();
  }
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

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

describeKernel('observe: eBPF flow events in the lab', () => {
  let state: LabState;
  let dir: string;
  const sources: EventSource[] = [];
  const seen = new Collector();

  const targets = (): NodeTarget[] =>
    (state.topology?.nodes ?? []).map((n) => ({ scope: LAB, node: n.name, netns: n.netns }));
  const pod = (id: string): { netns: string; address: string; node: string } => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };

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
    for (const t of targets()) {
      const s = createEbpfEventSource(t, { connectionPollMs: 200 });
      await s.start(seen.sink);
      sources.push(s);
    }
  });

  afterAll(async () => {
    for (const s of sources) await s.stop();
    try {
      await labDown(LAB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports an allowed TCP connection once, naming the deciding rule and the endpoint', async () => {
    seen.clear();
    const a = pod('x/a');
    const b = pod('x/b');
    const measured = await measureReach(LAB, {
      port: 80,
      protocol: 'TCP',
      from: ['x/b'],
      timeoutMs: PROBE_TIMEOUT_MS,
    });
    expect(measured.matrix.results['x/b']?.['x/a']).toBe(true);
    const rule = ruleOf('x/a', 'ingress');
    const match = (e: VerdictEvent): boolean =>
      e.src === b.address && e.dst === a.address && e.dport === 80 && e.direction === 'ingress';
    await until('the allow event of x/b → x/a', () => seen.verdicts().some(match));
    const events = seen.verdicts().filter(match);
    // One per connection (the SYN), none for the rest of it: the established path sends nothing.
    expect(events).toHaveLength(1);
    const [allow] = events as [VerdictEvent];
    expect(allow).toMatchObject({ verdict: 'allow', rule, endpoint: 'x/a', protocol: 6 });
    expect(allow.sport).toBeGreaterThan(0);
    expect(allow.bytes).toBeGreaterThanOrEqual(54);
    expect(Math.abs(allow.time - Date.now())).toBeLessThan(10_000);
    // x/b's egress has no policy: its default allows, and says so.
    expect(
      seen
        .verdicts()
        .some(
          (e) =>
            e.verdict === 'allow' &&
            e.endpoint === 'x/b' &&
            e.direction === 'egress' &&
            e.rule === 'x/b/egress/default' &&
            e.dst === a.address,
        ),
    ).toBe(true);
    // x/b reaches every pod: nothing it sent was denied.
    expect(seen.verdicts().filter((e) => e.src === b.address && e.verdict !== 'allow')).toEqual([]);
    expect(seen.lost.get(LOST_RING_BUFFER) ?? 0).toBe(0);
  });

  it('reports denied packets with the NetworkPolicy default rule', async () => {
    seen.clear();
    const a = pod('x/a');
    const c = pod('x/c');
    const measured = await measureReach(LAB, {
      port: 80,
      protocol: 'TCP',
      from: ['x/c'],
      timeoutMs: PROBE_TIMEOUT_MS,
    });
    expect(measured.matrix.results['x/c']?.['x/a']).toBe(false);
    const match = (e: VerdictEvent): boolean =>
      e.src === c.address && e.dst === a.address && e.dport === 80 && e.direction === 'ingress';
    await until('a deny event of x/c → x/a', () => seen.verdicts().some(match));
    const denies = seen.verdicts().filter(match);
    for (const d of denies)
      expect(d).toMatchObject({
        verdict: 'deny',
        rule: 'x/a/ingress/default',
        endpoint: 'x/a',
        direction: 'ingress',
        protocol: 6,
      });
    // Every dropped packet (SYN and retransmissions) is one event.
    expect(denies.length).toBeGreaterThanOrEqual(1);
  });

  it('reports connection totals as they grow, and the end when the entry goes', async () => {
    seen.clear();
    const a = pod('x/a');
    const b = pod('x/b');
    const echo = new EchoPair(a.netns, b.netns, a.address, ECHO_PORT);
    try {
      await echo.start();
      const ours = (): ConnectionEvent[] =>
        seen.connections().filter((e) => e.dst === a.address && e.dport === ECHO_PORT && e.src === b.address);
      await echo.roundTrip(1000);
      await until('a first update', () => ours().some((e) => e.phase === 'update' && e.bytes > 1000));
      const first = Math.max(...ours().map((e) => e.bytes));
      const firstPackets = Math.max(...ours().map((e) => e.packets));
      for (let i = 0; i < 5; i++) await echo.roundTrip(4000);
      await until('totals that grew', () => ours().some((e) => e.bytes >= first + 5 * 4000));
      expect(Math.max(...ours().map((e) => e.packets))).toBeGreaterThan(firstPackets);
      expect(ours().every((e) => e.protocol === 6 && e.phase === 'update')).toBe(true);

      // Garbage collection (here: by hand) ends the connection with its final totals.
      const last = Math.max(...ours().map((e) => e.bytes));
      for (const t of targets()) {
        const ct = BpfMap.fromPin(mapPinPath(nodeDir(t.scope, t.node), MAP.conntrack), ctKey, ctValue);
        try {
          for (const [k] of ct.entries())
            if (k.daddr === a.address && k.dport === ECHO_PORT && k.saddr === b.address) ct.delete(k);
        } finally {
          ct.close();
        }
      }
      echo.stop();
      await until('the end', () => ours().some((e) => e.phase === 'end'));
      const ends = ours().filter((e) => e.phase === 'end');
      expect(Math.max(...ends.map((e) => e.bytes))).toBeGreaterThanOrEqual(last);
    } finally {
      echo.stop();
    }
  });

  it('sends Log events whatever flowLogs says; flowLogs: false silences allow and deny without a reload', async () => {
    await apply([ALLOW_B, AUDIT]);
    const before = programIds();
    const quiet = createEbpfBackend({ flowLogs: false });
    for (const t of targets()) {
      const r = await quiet.apply(t, state.ir, state.ir);
      expect(r.changed).toEqual(['config']);
    }
    expect(programIds()).toEqual(before);

    seen.clear();
    const a = pod('x/a');
    const b = pod('x/b');
    for (const from of ['x/b', 'x/c'])
      await measureReach(LAB, { port: 80, protocol: 'TCP', from: [from], timeoutMs: PROBE_TIMEOUT_MS });
    const logRule = state.ir.ruleSets.find((r) => r.endpoint === 'x/a' && r.direction === 'ingress')
      ?.globalRules[0]?.id;
    await until('log events', () => seen.verdicts().filter((e) => e.verdict === 'log').length >= 2);
    await sleep(300);
    const logs = seen.verdicts().filter((e) => e.verdict === 'log');
    expect(logs.every((e) => e.rule === logRule && e.endpoint === 'x/a' && e.dst === a.address)).toBe(true);
    expect(logs.some((e) => e.src === b.address)).toBe(true);
    expect(logs.some((e) => e.src === pod('x/c').address)).toBe(true);
    expect(seen.verdicts().filter((e) => e.verdict !== 'log')).toEqual([]);

    // And back on: allow events again, still no reload.
    for (const t of targets())
      expect((await createEbpfBackend().apply(t, state.ir, state.ir)).changed).toEqual(['config']);
    expect(programIds()).toEqual(before);
    seen.clear();
    await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b'], timeoutMs: PROBE_TIMEOUT_MS });
    await until('allow events', () =>
      seen.verdicts().some((e) => e.verdict === 'allow' && e.endpoint === 'x/a' && e.src === b.address),
    );
  });

  it('counts what the ring buffer could not take when nobody reads it, and reports it', async () => {
    seen.clear();
    const a = pod('x/a');
    const c = pod('x/c');
    // Twice what the ring buffer holds (48 bytes a record with its header), as denied UDP
    // datagrams x/c → x/a while this process is blocked (spawnSync): the rest are counted lost.
    const capacity = Math.floor(EVENTS_BYTES / 48);
    const total = 2 * capacity;
    const script = `
      const s = require('node:dgram').createSocket('udp4');
      const msg = Buffer.alloc(16);
      let n = 0;
      const burst = () => { for (let i = 0; i < 500 && n < ${total}; i++, n++) s.send(msg, 80, process.argv[1]); if (n < ${total}) setImmediate(burst); else setTimeout(() => s.close(), 200); };
      burst();`;
    const r = spawnSync('ip', ['netns', 'exec', c.netns, process.execPath, '-e', script, a.address], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    await until('the loss report', () => (seen.lost.get(LOST_RING_BUFFER) ?? 0) > 0, 5000);
    // The backlog comes in batches, one per event loop turn.
    let delivered = -1;
    await until('the backlog', () => {
      const now = seen.verdicts().length;
      const settled = now === delivered;
      delivered = now;
      return settled;
    });
    const denies = seen.verdicts().filter((e) => e.verdict === 'deny' && e.src === c.address);
    const lost = seen.lost.get(LOST_RING_BUFFER) ?? 0;
    console.log(`ring buffer overflow: ${denies.length} deny events delivered, ${lost} lost`);
    expect(denies.length).toBeGreaterThan(capacity * 0.9);
    expect(denies.length).toBeLessThanOrEqual(capacity * 1.3);
    expect(denies.length + lost).toBeGreaterThan(total * 0.75);
    expect(denies.every((e) => e.rule === 'x/a/ingress/default' && e.protocol === 17)).toBe(true);
  });

  it('waits quietly for a node without pins and leaves no fd or timer behind', async () => {
    const fds = openFds();
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const timersBefore = timers();
    const c = new Collector();
    const ghost = createEbpfEventSource({ scope: LAB, node: 'not-yet', netns: 'sy-ebf-none' });
    await ghost.start(c.sink);
    await sleep(1200);
    await ghost.stop();
    expect(c.events).toEqual([]);
    expect(openFds()).toBe(fds);

    // A real node: open, read, stop — and every fd goes with it.
    const t = targets()[0] as NodeTarget;
    const s = createEbpfEventSource(t);
    await s.start(c.sink);
    expect(openFds()).toBeGreaterThan(fds);
    await s.stop();
    await s.stop();
    expect(openFds()).toBe(fds);
    expect(timers()).toBeLessThanOrEqual(timersBefore);
  });
});

describeKernel('observe: cost of flow events (PROG_TEST_RUN)', () => {
  it('measures a denied packet with flow events off and on', () => {
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
    const reader = new RingBufReader(h.maps.events);
    const REPEAT = 2000;
    try {
      const run = (): number =>
        h.program('x/a', 'ingress').testRun({
          data: frame({ src: B, dst: A, protocol: 'TCP', dport: 80 }),
          repeat: REPEAT,
          context: skbContext(),
          contextOutSize: 0,
        }).durationNs;
      const results: Record<string, number[]> = { off: [], on: [] };
      for (let i = 0; i < 5; i++) {
        h.maps.config.update(0, { flags: 0, pad: 0 });
        results.off?.push(run());
        h.maps.config.update(0, { flags: NODE_CONFIG_FLAG.flowEvents, pad: 0 });
        results.on?.push(run());
        let n = 0;
        reader.consume(() => n++);
        expect(n).toBe(REPEAT);
      }
      const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? 0;
      console.log(
        `denied packet ns (PROG_TEST_RUN, repeat ${REPEAT}, median of 5): events off ${median(results.off ?? [])}, on ${median(results.on ?? [])}`,
      );
    } finally {
      reader.close();
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
