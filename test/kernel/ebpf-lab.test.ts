/**
 * Real packets through the eBPF backend in the shared lab (`lab up/apply --backend ebpf` as
 * library calls): upstream netpol scenarios on x/y/z, each applied as an update of the previous
 * one and compared pair by pair with the reference evaluator for TCP and UDP, then what only a
 * running dataplane shows: replies of allowed connections, an established connection across a
 * program swap, membership changes without reloads, a verifier rejection that changes nothing,
 * the XDP prefilter, counters, conntrack, and remove() leaving nothing behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachTcx,
  Link,
  Program,
  queryTcx,
  R0,
  R10,
  TcAction,
  VerifierError,
  withNetns,
  type AssembledProgram,
  type Instruction,
} from '../../src/bpf/index.js';
import { allocate, buildIR, reachMatrix, type ReachMatrix } from '../../src/calc/index.js';
import { ApplyError, type NodeTarget } from '../../src/dataplane/backend.js';
import {
  collectConntrackGarbage,
  createEbpfBackend,
  ebpfBackend,
  readConntrack,
} from '../../src/dataplane/ebpf/index.js';
import { nodeView } from '../../src/dataplane/ebpf/node.js';
import { nodeDir } from '../../src/dataplane/ebpf/paths.js';
import type { GeneratedProgram } from '../../src/dataplane/ebpf/program.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { caseManifestPaths, FIXTURES_DIR, NETPOL_E2E_CASES } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';

const LAB = `ebpft-${process.pid % 10000}`;
const MODEL = join(FIXTURES_DIR, 'xyz/model.yaml');
/** Denied pairs cost a full timeout; lab pairs answer in well under a millisecond. */
const PROBE_TIMEOUT_MS = 600;

function diff(expected: ReachMatrix, measured: ReachMatrix): string[] {
  const out: string[] = [];
  for (const [src, row] of Object.entries(expected.results))
    for (const [dst, want] of Object.entries(row))
      if (measured.results[src]?.[dst] !== want)
        out.push(
          `${src} -> ${dst}: expected ${want ? 'allowed' : 'denied'}, measured ${want ? 'denied' : 'allowed'}`,
        );
  return out;
}

describeKernel('ebpf: real packets in the lab', () => {
  let state: LabState;
  let dir: string;
  const timings: Record<string, number> = {};

  const targets = (): NodeTarget[] =>
    (state.topology?.nodes ?? []).map((n) => ({ scope: LAB, node: n.name, netns: n.netns }));
  const pod = (id: string): { netns: string; address: string; hostInterface: string; node: string } => {
    const p = state.topology?.pods.find((x) => x.id === id);
    if (!p) throw new Error(`no pod ${id}`);
    return p;
  };

  async function apply(files: string[]): Promise<IR> {
    const result = await converge({ name: LAB, model: loadManifests(files), files, mode: 'apply' });
    state = result.state;
    return state.ir;
  }

  async function measure(port: number, protocol: 'TCP' | 'UDP'): Promise<ReachMatrix> {
    return (await measureReach(LAB, { port, protocol, timeoutMs: PROBE_TIMEOUT_MS })).matrix;
  }

  /** Program id per pinned link (tcx and xdp), by pin path. */
  function programIds(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of targets()) {
      const links = join(nodeDir(t.scope, t.node), 'links');
      if (!existsSync(links)) continue;
      for (const name of readdirSync(links)) {
        const link = Link.fromPin(join(links, name));
        out[`${t.node}/${name}`] = link.info().programId;
        link.close();
      }
    }
    return out;
  }

  function policyFile(name: string, yaml: string): string {
    const path = join(dir, name);
    writeFileSync(path, yaml);
    return path;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-ebpf-lab-'));
    const started = performance.now();
    const result = await converge({
      name: LAB,
      model: loadManifests([MODEL]),
      files: [MODEL],
      mode: 'up',
      backend: 'ebpf',
      // These tests drive the backend directly; an agent would repair what they change.
      agents: false,
      // The walk's mechanics (program swaps, set membership); ebpf-table.test.ts has the tables'.
      policyMode: 'walk',
    });
    timings.labUpMs = performance.now() - started;
    state = result.state;
  });

  afterAll(async () => {
    console.log(`ebpf-lab timings: ${JSON.stringify(timings)}`);
    try {
      await labDown(LAB);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(existsSync(`/sys/fs/bpf/switchyard/${LAB}`)).toBe(false);
  });

  it('applies the x/y/z lab from scratch and again with nothing to do', async () => {
    const ir = state.ir;
    for (const t of targets()) await ebpfBackend.remove(t);
    let fresh = 0;
    let again = 0;
    for (const t of targets()) {
      const first = await ebpfBackend.apply(t, ir);
      fresh += first.durationMs;
      expect(first.changed).toContain('maps');
      const second = await ebpfBackend.apply(t, ir, ir);
      again += second.durationMs;
      expect(second.changed).toEqual([]);
    }
    timings.applyFreshMs = Math.round(fresh);
    timings.applyNoopMs = Math.round(again);
  });

  // Every upstream case runs for ebpf in test/diff/conformance.test.ts; here the ones
  // that reach the most distinct code (named ports, ipBlock/except, egress, label updates,
  // stacked policies, SCTP next to TCP, UDP) keep this file's evidence on its own.
  const DISTINCT =
    /named port|CIDR|Except|updated pod|stacked|SCTP|Ingress, Egress specified together|client side/i;
  for (const c of NETPOL_E2E_CASES.filter((x) => x.context.includes('UDP') || DISTINCT.test(x.name))) {
    const probes = c.probes.filter((p) => p.protocol !== 'SCTP');
    if (probes.length === 0) continue;
    it(`netpol: ${c.context} / ${c.name}${c.step ? ` [${c.step}]` : ''}`, async () => {
      const ir = await apply(caseManifestPaths(c));
      for (const probe of probes) {
        const protocol = probe.protocol as 'TCP' | 'UDP';
        const measured = await measure(probe.port, protocol);
        expect(diff(reachMatrix(ir, probe.port, protocol), measured), `${probe.port}/${protocol}`).toEqual(
          [],
        );
      }
    });
  }

  it('passes replies of allowed connections where the reverse direction is denied (TCP and UDP)', async () => {
    const deny = policyFile(
      'deny-in-x-a.yaml',
      `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-in, namespace: x }
spec:
  podSelector: { matchLabels: { pod: a } }
  policyTypes: [Ingress]
`,
    );
    const ir = await apply([MODEL, deny]);
    for (const protocol of ['TCP', 'UDP'] as const) {
      const measured = await measure(80, protocol);
      expect(diff(reachMatrix(ir, 80, protocol), measured)).toEqual([]);
      // x/a reaches everyone (their answers come back through its ingress program), nobody reaches x/a.
      expect(measured.results['x/a']?.['y/b']).toBe(true);
      expect(measured.results['x/a']?.['z/b']).toBe(true);
      expect(measured.results['y/b']?.['x/a']).toBe(false);
    }
  });

  it('keeps an established TCP connection across a program swap that still allows it', async () => {
    const allow = (ports: number[]): string =>
      policyFile(
        `allow-${ports.join('-')}.yaml`,
        `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: only-b, namespace: x }
spec:
  podSelector: { matchLabels: { pod: a } }
  policyTypes: [Ingress]
  ingress:
    - from: [{ podSelector: { matchLabels: { pod: b } } }]
      ports: [${ports.map((p) => `{ port: ${p} }`).join(', ')}]
`,
      );
    await apply([MODEL, allow([8080])]);
    const server = pod('x/a');
    const client = pod('x/b');
    const echo = new EchoPair(server.netns, client.netns, server.address, 8080);
    try {
      await echo.start();
      expect(await echo.roundTrip('one')).toBe('one');
      const before = programIds();
      await apply([MODEL, allow([8080, 9090])]);
      const after = programIds();
      const swapped = Object.keys(after).filter((k) => after[k] !== before[k]);
      expect(swapped.length).toBeGreaterThan(0);
      expect(await echo.roundTrip('two')).toBe('two');
      // A new connection is judged by the new program.
      const measured = await measure(8080, 'TCP');
      expect(measured.results['x/c']?.['x/a']).toBe(false);
    } finally {
      echo.stop();
    }
  });

  it('changes IP-set membership on relabel without reloading any program', async () => {
    const policy = join(FIXTURES_DIR, 'netpol-e2e/updated-pod.yaml');
    await apply([MODEL, policy]);
    const before = programIds();
    expect((await measure(80, 'TCP')).results['x/b']?.['x/a']).toBe(false);
    const started = performance.now();
    const ir = await apply([join(FIXTURES_DIR, 'xyz/model-xb-pod2-updated.yaml'), policy]);
    timings.relabelConvergeMs = Math.round(performance.now() - started);
    expect(programIds()).toEqual(before);
    const measured = await measure(80, 'TCP');
    expect(diff(reachMatrix(ir, 80, 'TCP'), measured)).toEqual([]);
    expect(measured.results['x/b']?.['x/a']).toBe(true);
    // The backend's own share of the relabel, back and forth.
    const prev = state.ir;
    const backModel = loadManifests([MODEL, policy]);
    const back = buildIR(backModel, allocate(backModel, state.allocations));
    let ms = 0;
    for (const t of targets()) ms += (await ebpfBackend.apply(t, back, prev)).durationMs;
    for (const t of targets()) ms += (await ebpfBackend.apply(t, prev, back)).durationMs;
    timings.relabelBackendMs = Math.round(ms / 2);
    expect(programIds()).toEqual(before);
  });

  it('keeps the old program and reports the verifier log when a new one is rejected', async () => {
    const before = programIds();
    const xa = pod('x/a');
    const target = targets().find((t) => t.node === xa.node) as NodeTarget;
    const bad = new Assembler().ldxdw(R0, R10, 8).assemble().instructions[0] as Instruction;
    const mutateProgram = (g: GeneratedProgram): readonly Instruction[] | AssembledProgram =>
      g.endpoint === 'x/a' && g.direction === 'ingress' ? [bad, ...g.program.instructions] : g.program;
    const error = await createEbpfBackend({ mutateProgram })
      .apply(target, state.ir, state.ir)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplyError);
    const message = (error as ApplyError).message;
    expect(message).toMatch(/verifier rejected the ingress program of x\/a/);
    expect(message).toMatch(/invalid (read from )?stack/);
    // The reason and the listing around the instruction by default; the whole log on request.
    expect(message).not.toMatch(/--- verifier log ---/);
    expect((error as ApplyError).cause).toBeInstanceOf(VerifierError);
    const verbose = await createEbpfBackend({ mutateProgram, verifierLog: true })
      .apply(target, state.ir, state.ir)
      .catch((e: unknown) => e);
    expect((verbose as ApplyError).message).toMatch(/--- verifier log ---/);
    expect(programIds()).toEqual(before);
    const measured = await measure(80, 'TCP');
    expect(diff(reachMatrix(state.ir, 80, 'TCP'), measured)).toEqual([]);
  });

  it('drops a deny-listed source at the XDP prefilter where it crosses the fabric, and counts it', async () => {
    const xb = pod('x/b');
    const prefilter = policyFile(
      'prefilter.yaml',
      `apiVersion: switchyard.dev/v1alpha1
kind: Prefilter
metadata: { name: blocklist }
spec:
  cidrs: [${xb.address}/32, 198.18.200.0/24]
`,
    );
    const ir = await apply([MODEL, prefilter]);
    const measured = await measure(80, 'TCP');
    const expected = reachMatrix(ir, 80, 'TCP');
    // Only x/b's own connections are compared: answers *from* x/b are dropped at the prefilter
    // too (it sits before conntrack), which the evaluator's new-connection view does not model.
    expect(diff({ ...expected, results: { 'x/b': expected.results['x/b'] ?? {} } }, measured)).toEqual([]);
    const row = measured.results['x/b'] ?? {};
    for (const other of state.topology?.pods ?? [])
      if (other.id !== 'x/b') expect(row[other.id], other.id).toBe(other.node === xb.node);
    const other = targets().find((t) => t.node !== xb.node) as NodeTarget;
    const counters = await ebpfBackend.counters(other);
    const drops = counters.find((c) => c.rule === 'prefilter/blocklist');
    expect(drops?.packets).toBeGreaterThan(0);
    expect(drops?.bytes).toBeGreaterThan(0);
    const xdp = Object.keys(programIds()).filter((k) => k.includes('/xdp-'));
    expect(xdp.length).toBe(targets().length);
  });

  it('moves per-rule counters and lists and collects conntrack entries', async () => {
    const ir = await apply([MODEL, join(FIXTURES_DIR, 'netpol-e2e/allow-ingress-for-target.yaml')]);
    await measure(80, 'TCP');
    const all = (await Promise.all(targets().map((t) => ebpfBackend.counters(t)))).flat();
    const allowXa = all.find((c) => c.rule === 'np:x/allow-all-to-a/ingress/0' && c.endpoint === 'x/a');
    expect(allowXa?.packets).toBeGreaterThanOrEqual(8);
    expect(all.find((c) => c.rule === 'x/b/ingress/default')?.packets).toBeGreaterThan(0);
    expect(all.find((c) => c.rule === 'x/a/egress/default')?.packets).toBeGreaterThan(0);
    expect(all.every((c) => !c.rule.includes('fail-closed') || c.packets > 0)).toBe(true);
    const table = targets().flatMap((t) => readConntrack(t));
    expect(table.some((e) => e.endpoint === 'x/a' && e.direction === 'ingress' && e.protocol === 'TCP')).toBe(
      true,
    );
    expect(table.every((e) => e.endpoint !== undefined)).toBe(true);
    for (const t of targets()) {
      const gc = collectConntrackGarbage(t);
      expect(gc.orphaned).toBe(0);
      expect(gc.scanned).toBeGreaterThan(0);
    }
    expect(ir.ruleSets.length).toBeGreaterThan(0);
  });

  it('remove() detaches every link and leaves no pins, twice in a row, and leaves other tcx programs alone', async () => {
    const xa = pod('x/a');
    const xaNode = targets().find((t) => t.node === xa.node) as NodeTarget;
    const foreign = Program.load({
      name: 'foreign',
      type: 'sched_cls',
      expectedAttachType: 'tcx_ingress',
      instructions: new Assembler().exitWith(TcAction.NEXT).assemble(),
    });
    const foreignLink = withNetns(xaNode.netns, () =>
      attachTcx(foreign, { ifname: xa.hostInterface, direction: 'ingress' }),
    );
    try {
      // A program swap keeps its place in the chain: first, ahead of the foreign program.
      await apply([MODEL, join(FIXTURES_DIR, 'netpol-e2e/default-deny-all.yaml')]);
      const chain = withNetns(xaNode.netns, () =>
        queryTcx({ ifname: xa.hostInterface, direction: 'ingress' }),
      );
      expect(chain.programIds).toHaveLength(2);
      expect(chain.programIds[1]).toBe(foreign.id);
      for (const t of targets()) {
        await ebpfBackend.remove(t);
        await ebpfBackend.remove(t);
        expect(existsSync(nodeDir(t.scope, t.node))).toBe(false);
        expect(await ebpfBackend.counters(t)).toEqual([]);
      }
      for (const p of state.topology?.pods ?? []) {
        const node = state.topology?.nodes.find((n) => n.name === p.node);
        for (const direction of ['ingress', 'egress'] as const) {
          const chain = withNetns(node?.netns ?? '', () => queryTcx({ ifname: p.hostInterface, direction }));
          expect(chain.programIds, `${p.id} tcx ${direction}`).toEqual(
            p.id === 'x/a' && direction === 'ingress' ? [foreign.id] : [],
          );
        }
      }
    } finally {
      foreignLink.close();
      foreign.close();
    }
    const measured = await measure(80, 'TCP');
    expect(Object.values(measured.results).every((row) => Object.values(row).every(Boolean))).toBe(true);
  });

  it('leaves nothing attached on a node that had nothing in force when its last program is rejected', async () => {
    // After remove(): every node has nothing in force, so the backend attaches each program as
    // soon as it passes the verifier, while the others are verified. The last one is rejected.
    const xa = pod('x/a');
    const target = targets().find((t) => t.node === xa.node) as NodeTarget;
    const last = nodeView(state.ir, target.node).ruleSets.at(-1);
    expect(last).toBeDefined();
    const bad = new Assembler().ldxdw(R0, R10, 8).assemble().instructions[0] as Instruction;
    const mutateProgram = (g: GeneratedProgram): readonly Instruction[] | AssembledProgram =>
      g.endpoint === last?.endpoint && g.direction === last.direction
        ? [bad, ...g.program.instructions]
        : g.program;
    const error = await createEbpfBackend({ mutateProgram })
      .apply(target, state.ir, undefined)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplyError);
    expect((error as ApplyError).message).toMatch(/the programs in force are unchanged/);
    const links = join(nodeDir(target.scope, target.node), 'links');
    expect(existsSync(links) ? readdirSync(links) : []).toEqual([]);
    for (const p of (state.topology?.pods ?? []).filter((x) => x.node === target.node))
      for (const direction of ['ingress', 'egress'] as const) {
        const chain = withNetns(target.netns, () => queryTcx({ ifname: p.hostInterface, direction }));
        expect(chain.programIds, `${p.id} tcx ${direction}`).toEqual([]);
      }
    // Nothing in force: everything still reaches everything; then the whole IR applies.
    const open = await measure(80, 'TCP');
    expect(Object.values(open.results).every((row) => Object.values(row).every(Boolean))).toBe(true);
    for (const t of targets()) await ebpfBackend.apply(t, state.ir, undefined);
    expect(Object.keys(programIds()).length).toBeGreaterThan(0);
    expect(diff(reachMatrix(state.ir, 80, 'TCP'), await measure(80, 'TCP'))).toEqual([]);
  });
});

/** A TCP echo server in one pod and a client in another that keeps one connection open. */
class EchoPair {
  private server: ChildProcess | undefined;
  private client: ChildProcess | undefined;
  private lines: string[] = [];
  private waiting: ((line: string) => void) | undefined;

  constructor(
    private readonly serverNetns: string,
    private readonly clientNetns: string,
    private readonly address: string,
    private readonly port: number,
  ) {}

  private static node(netns: string, script: string, arg: unknown): ChildProcess {
    return spawn(
      'ip',
      ['netns', 'exec', netns, process.execPath, '--input-type=module', '-e', script, JSON.stringify(arg)],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
  }

  async start(): Promise<void> {
    this.server = EchoPair.node(
      this.serverNetns,
      `import net from 'node:net';
       const { port } = JSON.parse(process.argv.at(-1));
       net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(port, '0.0.0.0', () => console.log('ready'));`,
      { port: this.port },
    );
    await this.expectLine(this.server, 'ready');
    this.client = EchoPair.node(
      this.clientNetns,
      `import net from 'node:net';
       import readline from 'node:readline';
       const { host, port } = JSON.parse(process.argv.at(-1));
       const s = net.connect({ host, port }, () => console.log('connected'));
       s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
       readline.createInterface({ input: s }).on('line', (l) => console.log('echo ' + l));
       readline.createInterface({ input: process.stdin }).on('line', (l) => s.write(l + '\\n'));`,
      { host: this.address, port: this.port },
    );
    this.client.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      for (const line of chunk.split('\n').filter(Boolean)) {
        if (this.waiting) {
          const w = this.waiting;
          this.waiting = undefined;
          w(line);
        } else this.lines.push(line);
      }
    });
    expect(await this.next(5000)).toBe('connected');
  }

  private expectLine(child: ChildProcess, text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${text}`)), 10_000);
      child.stdout?.setEncoding('utf8').on('data', (c: string) => {
        if (c.includes(text)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  private next(timeoutMs: number): Promise<string> {
    const ready = this.lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        resolve('timeout');
      }, timeoutMs);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  async roundTrip(text: string): Promise<string> {
    this.client?.stdin?.write(`${text}\n`);
    const line = await this.next(3000);
    return line.startsWith('echo ') ? line.slice(5) : line;
  }

  stop(): void {
    for (const c of [this.client, this.server]) if (c && c.exitCode === null) c.kill('SIGKILL');
  }
}
