/**
 * Cluster: apply-to-enforced time. "A policy change written to the datastore is enforced on every
 * node in under a second (p99)". What is measured is the whole path of a real cluster lab: etcd,
 * one `switchyard agent` process per node watching it, real pods with probe servers.
 *
 *   topology: N nodes × M pods per node in one namespace (every pod serves TCP 8080), a
 *     background NetworkPolicy giving every filler pod a rule, and the toggled policy `flip`: it
 *     selects the target pod (on node-2) and allows TCP 8080 from pods labelled `bench: client`
 *     (allow) or `bench: nobody` (deny). The client pod sits on node-1, so the connection crosses
 *     the fabric and the rule that decides lives on the target's node only.
 *   one flip: `applyManifests` of the policy file to the cluster's etcd (read, validate against
 *     the stored objects, allocate, one transaction); t0 is taken right before it.
 *     - probe flips: t0 → the start of the first of `confirm` consecutive probes with the new
 *       outcome. A prober process inside the client pod (its netns and cgroup) starts a TCP
 *       connect to the target every `probeIntervalMs`; a connect that does not complete within
 *       `probeTimeoutMs` (or is refused) counts as denied. Probes are dated when they start
 *       (CLOCK_MONOTONIC in both processes), so the figure's resolution is the interval, not
 *       the timeout.
 *     - all nodes in force: t0 → the moment every node's agent reports (`/v1/status`, polled
 *       every few ms) the write's etcd revision or a newer one in force.
 *
 * Backends take turns as a whole: each gets its own cluster (etcd, lab, agents), torn down
 * before the next one comes up. Flips alternate allow ↔ deny, starting from deny.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { AgentStatus } from '../../agent/agent.js';
import { agentRequest } from '../../agent/client.js';
import { apiSocket } from '../../agent/paths.js';
import type { BackendName } from '../../dataplane/backend.js';
import { availableBackends } from '../../dataplane/registry.js';
import { applyManifests } from '../../datastore/apply.js';
import { EtcdStore } from '../../datastore/etcd.js';
import { agentStateDir } from '../../lab/agents.js';
import { clusterStore, clusterUp } from '../../lab/cluster.js';
import { labDown } from '../../lab/index.js';
import { spawnInNetns } from '../../netns/index.js';
import { median, percentile, summarize } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import { measuredScenario, type BenchContext, type BenchScenario } from '../types.js';

export interface ClusterBenchOptions {
  nodes: number;
  podsPerNode: number;
  /** Policy writes per backend (alternating allow and deny). */
  flips: number;
  backends?: readonly BackendName[];
  /** Lab names are `<prefix><first letter of the backend>` (default bcl<pid>). */
  labPrefix?: string;
  /** Flipping stops once a backend has spent this long flipping (the cluster's start not counted). */
  capMs: number;
  probeIntervalMs: number;
  probeTimeoutMs: number;
  /** Consecutive probes with the new outcome that make a flip. */
  confirm: number;
  /** A flip not seen (probe or agents) within this long is recorded as timed out. */
  flipTimeoutMs: number;
}

export function clusterBenchOptions(quick: boolean): ClusterBenchOptions {
  const common = { probeIntervalMs: 10, probeTimeoutMs: 100, confirm: 3, flipTimeoutMs: 15_000 };
  return quick
    ? { nodes: 3, podsPerNode: 4, flips: 6, capMs: 60_000, ...common }
    : { nodes: 3, podsPerNode: 50, flips: 20, capMs: 120_000, ...common };
}

export const TARGET_P99_MS = 1000;
const ORDER: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];
const NAMESPACE = 'bench';
const PORT = 8080;
const CLIENT = 'n1-p0';
const TARGET = 'n2-p0';
const POLICY_FILE = '20-flip.yaml';

// ---------------------------------------------------------------------------------------------
// Manifests

function podDoc(node: number, i: number): string {
  const name = `n${node}-p${i}`;
  const role = name === CLIENT ? 'client' : name === TARGET ? 'target' : 'filler';
  return (
    `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: ${NAMESPACE}\n` +
    `  labels: { bench: ${role}, node: n${node} }\n` +
    `spec:\n  nodeName: node-${node}\n` +
    `  containers: [{ name: c, ports: [{ containerPort: ${PORT}, protocol: TCP }] }]\n`
  );
}

/** The namespace, the pods and a background policy (every filler pod gets one ingress rule). */
export function clusterManifest(o: { nodes: number; podsPerNode: number }): string {
  if (o.nodes < 2) throw new Error('the cluster bench needs at least 2 nodes (client and target apart)');
  if (o.podsPerNode < 1) throw new Error('the cluster bench needs at least 1 pod per node');
  const docs = [
    `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${NAMESPACE}\n  labels: { team: ${NAMESPACE} }\n`,
  ];
  for (let n = 1; n <= o.nodes; n++) for (let i = 0; i < o.podsPerNode; i++) docs.push(podDoc(n, i));
  docs.push(
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: fillers, namespace: ${NAMESPACE} }\n` +
      `spec:\n  podSelector: { matchLabels: { bench: filler } }\n  policyTypes: [Ingress]\n` +
      `  ingress:\n    - from: [{ podSelector: {} }]\n      ports: [{ port: ${PORT}, protocol: TCP }]\n`,
  );
  return docs.join('---\n');
}

/** The toggled policy: the target accepts TCP 8080 from the client (allow) or from nobody (deny). */
export function flipPolicy(allow: boolean): string {
  return (
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: flip, namespace: ${NAMESPACE} }\n` +
    `spec:\n  podSelector: { matchLabels: { bench: target } }\n  policyTypes: [Ingress]\n` +
    `  ingress:\n    - from: [{ podSelector: { matchLabels: { bench: ${allow ? 'client' : 'nobody'} } } }]\n` +
    `      ports: [{ port: ${PORT}, protocol: TCP }]\n`
  );
}

// ---------------------------------------------------------------------------------------------
// The prober: a small node process inside the client pod

/**
 * Reads `on <window>` / `off` lines on stdin. While a window is on, starts a TCP connect every
 * INTERVAL ms and prints `r <window> <seq> <start ns> <1|0> <why>` when it settles; `b <window>
 * <seq>` marks the first probe of a window. A timeout is decided one setImmediate later, so a
 * handshake the kernel completed in the same loop turn still counts as connected. Exits when stdin
 * closes or after LIFETIME ms, whichever is first.
 */
const PROBER = `
const net = require('node:net');
const [host, port, every, limit, lifetime] = [process.argv[1], +process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
let win = 0, seq = 0;
const out = (line) => process.stdout.write(line + '\\n');
function probe(w) {
  const s = seq++;
  const t = process.hrtime.bigint();
  let done = false;
  const sock = net.connect({ host, port });
  const finish = (ok, why) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    if (ok) sock.resetAndDestroy(); else sock.destroy();
    out('r ' + w + ' ' + s + ' ' + t + ' ' + (ok ? 1 : 0) + ' ' + why);
  };
  const timer = setTimeout(() => setImmediate(() => finish(false, 'timeout')), limit);
  sock.on('connect', () => finish(true, 'ok'));
  sock.on('error', (e) => finish(false, e.code || 'error'));
}
setInterval(() => { if (win) probe(win); }, every);
setTimeout(() => process.exit(3), lifetime).unref();
let buf = '';
process.stdin.on('data', (d) => {
  buf += d.toString();
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const [cmd, arg] = buf.slice(0, i).split(' ');
    buf = buf.slice(i + 1);
    if (cmd === 'on') { win = Number(arg); out('b ' + win + ' ' + seq); probe(win); }
    else if (cmd === 'off') win = 0;
  }
});
process.stdin.on('end', () => process.exit(0));
out('ready');
`;

interface ProbeResult {
  seq: number;
  start: bigint;
  ok: boolean;
  why: string;
}

interface Window {
  id: number;
  firstSeq?: number;
  results: Map<number, ProbeResult>;
  onResult?: () => void;
}

export interface ProbeCounts {
  ok: number;
  denied: number;
  timeouts: number;
  refused: number;
}

class Prober {
  private readonly child: ChildProcess;
  private readonly exited: Promise<number>;
  private exitCode: number | undefined;
  private stderr = '';
  private ready!: () => void;
  private readonly readyP = new Promise<void>((r) => (this.ready = r));
  private readonly windows = new Map<number, Window>();
  private nextWindow = 1;
  readonly counts: ProbeCounts = { ok: 0, denied: 0, timeouts: 0, refused: 0 };

  constructor(o: {
    netns: string;
    cgroup: string;
    address: string;
    port: number;
    intervalMs: number;
    timeoutMs: number;
    lifetimeMs: number;
  }) {
    this.child = spawnInNetns({
      netns: o.netns,
      cgroup: o.cgroup,
      argv: [
        process.execPath,
        '-e',
        PROBER,
        o.address,
        String(o.port),
        String(o.intervalMs),
        String(o.timeoutMs),
        String(Math.round(o.lifetimeMs)),
      ],
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve) => {
      this.child.on('error', (e) => {
        this.stderr += e.message;
        resolve(-1);
      });
      this.child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : -1)));
    });
    void this.exited.then((c) => (this.exitCode = c));
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    const lines = createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => this.line(line));
  }

  private line(line: string): void {
    if (line === 'ready') return this.ready();
    const f = line.split(' ');
    const w = this.windows.get(Number(f[1]));
    if (!w) return;
    if (f[0] === 'b') w.firstSeq = Number(f[2]);
    else if (f[0] === 'r') {
      const ok = f[4] === '1';
      const why = f[5] ?? '';
      if (ok) this.counts.ok++;
      else {
        this.counts.denied++;
        if (why === 'timeout') this.counts.timeouts++;
        else this.counts.refused++;
      }
      w.results.set(Number(f[2]), { seq: Number(f[2]), start: BigInt(f[3] ?? '0'), ok, why });
    }
    w.onResult?.();
  }

  private dead(): Error {
    return new Error(`the prober exited (${this.exitCode}): ${this.stderr.trim() || 'no output'}`);
  }

  async start(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the prober did not start')), timeoutMs);
    });
    const died = this.exited.then(() => Promise.reject(this.dead()));
    died.catch(() => undefined);
    try {
      await Promise.race([this.readyP, timeout, died]);
    } finally {
      clearTimeout(timer);
    }
  }

  open(): Window {
    if (this.exitCode !== undefined) throw this.dead();
    const w: Window = { id: this.nextWindow++, results: new Map() };
    this.windows.set(w.id, w);
    this.child.stdin?.write(`on ${w.id}\n`);
    return w;
  }

  close(w: Window): void {
    this.child.stdin?.write('off\n');
    // Results still in flight land nowhere (their window is gone).
    this.windows.delete(w.id);
  }

  /** Resolves once `until(w)` holds after some result (or now), or with false at the deadline. */
  wait(w: Window, until: (w: Window) => boolean, timeoutMs: number): Promise<boolean> {
    if (until(w)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        delete w.onResult;
        resolve(false);
      }, timeoutMs);
      w.onResult = () => {
        if (this.exitCode !== undefined || until(w)) {
          clearTimeout(timer);
          delete w.onResult;
          resolve(until(w));
        }
      };
    });
  }

  async stop(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Settled results of a window from its first probe on, in start order, up to the first gap. */
function settledPrefix(w: Window): ProbeResult[] {
  const out: ProbeResult[] = [];
  if (w.firstSeq === undefined) return out;
  for (let s = w.firstSeq; ; s++) {
    const r = w.results.get(s);
    if (!r) return out;
    out.push(r);
  }
}

/**
 * Index of the first probe started at or after t0 that begins a run of `confirm` probes with
 * outcome `want` (in start order, no gap), or -1.
 */
export function flipIndex(
  results: readonly { start: bigint; ok: boolean }[],
  t0: bigint,
  want: boolean,
  confirm: number,
): number {
  let run = 0;
  for (let i = 0; i < results.length; i++) {
    const r = results[i] as { start: bigint; ok: boolean };
    if (r.start < t0 || r.ok !== want) {
      run = 0;
      continue;
    }
    run++;
    if (run >= confirm) return i - confirm + 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Measurement

export interface FlipSample {
  /** What the write made the policy do. */
  to: 'allow' | 'deny';
  revision: number;
  /** t0 → etcd acknowledged the transaction. */
  writeMs: number;
  /** t0 → the probe saw the new outcome (undefined: timed out). */
  flipMs?: number;
  /** t0 → every agent reported the revision in force (undefined: timed out). */
  inForceMs?: number;
  /** t0 → each node's agent reported it. */
  nodeMs: Record<string, number>;
  /**
   * The agents' own apply of the write (kernel write + read back, their lastApply.durationMs), of
   * nodes that applied it (a node whose slice did not change only takes the revision).
   */
  applyMs: Record<string, number>;
  /** Probes before t0 that did not show the old outcome (should be 0). */
  baselineMismatch: number;
  /** Probes after the flip that showed the old outcome again (flapping, should be 0). */
  flaps: number;
}

export interface ClusterBackendRun {
  backend: BackendName;
  lab: string;
  /** The node whose rules decide (the target pod's). */
  targetNode: string;
  upMs: number;
  samples: FlipSample[];
  probes: ProbeCounts;
  /** Set when the time cap stopped the flips early. */
  capped?: boolean;
  flippingMs: number;
}

export interface ClusterBenchData {
  options: ClusterBenchOptions;
  runs: ClusterBackendRun[];
}

const msSince = (t0: bigint, t: bigint): number => Number(t - t0) / 1e6;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Between status polls of the agents still catching up. Asking more often steals the CPU the
 * agents need to apply (hundreds of API requests a second on two vCPUs): the figure's resolution
 * is this, not worth more than the agents' own time.
 */
const STATUS_POLL_MS = 25;

async function waitForNodes(
  lab: string,
  nodes: readonly string[],
  revision: number,
  t0: bigint,
  deadlineMs: number,
): Promise<{ nodeMs: Record<string, number>; applyMs: Record<string, number> }> {
  const out: Record<string, number> = {};
  const applyMs: Record<string, number> = {};
  const end = Date.now() + deadlineMs;
  while (Object.keys(out).length < nodes.length && Date.now() < end) {
    await Promise.all(
      nodes
        .filter((n) => out[n] === undefined)
        .map(async (n) => {
          try {
            const s = await agentRequest<AgentStatus>(apiSocket(agentStateDir(lab, n)), '/v1/status', {
              timeoutMs: 2000,
            });
            const now = process.hrtime.bigint();
            if (s.revision !== undefined && /^\d+$/.test(s.revision) && Number(s.revision) >= revision) {
              out[n] = msSince(t0, now);
              if (s.lastApply && s.lastApply.revision === String(revision))
                applyMs[n] = s.lastApply.durationMs;
            }
          } catch {
            // busy or restarting: asked again next round
          }
        }),
    );
    if (Object.keys(out).length < nodes.length) await sleep(STATUS_POLL_MS);
  }
  return { nodeMs: out, applyMs };
}

async function oneFlip(
  o: ClusterBenchOptions,
  lab: string,
  nodes: readonly string[],
  store: EtcdStore,
  prober: Prober,
  file: string,
  allow: boolean,
): Promise<FlipSample> {
  writeFileSync(file, flipPolicy(allow));
  const w = prober.open();
  try {
    // A few probes of the state in force before the write: the prober runs and the baseline is known.
    await prober.wait(w, (x) => settledPrefix(x).length >= o.confirm, 5000);
    const t0 = process.hrtime.bigint();
    const write = await applyManifests(store, [file]);
    const writeMs = msSince(t0, process.hrtime.bigint());
    const flipSeen = prober.wait(
      w,
      (x) => flipIndex(settledPrefix(x), t0, allow, o.confirm) >= 0,
      o.flipTimeoutMs,
    );
    const { nodeMs, applyMs } = await waitForNodes(lab, nodes, write.revision, t0, o.flipTimeoutMs);
    await flipSeen;
    const results = settledPrefix(w);
    const i = flipIndex(results, t0, allow, o.confirm);
    const before = results.filter((r) => r.start < t0);
    const sample: FlipSample = {
      to: allow ? 'allow' : 'deny',
      revision: write.revision,
      writeMs,
      nodeMs,
      applyMs,
      baselineMismatch: before.filter((r) => r.ok === allow).length,
      flaps: i < 0 ? 0 : results.slice(i).filter((r) => r.ok !== allow).length,
    };
    if (i >= 0) sample.flipMs = Math.max(0, msSince(t0, (results[i] as ProbeResult).start));
    if (Object.keys(nodeMs).length === nodes.length) sample.inForceMs = Math.max(...Object.values(nodeMs));
    return sample;
  } finally {
    prober.close(w);
  }
}

async function measureBackend(
  ctx: BenchContext,
  o: ClusterBenchOptions,
  backend: BackendName,
  lab: string,
): Promise<ClusterBackendRun> {
  const dir = mkdtempSync(join(tmpdir(), 'sy-bench-cluster-'));
  await labDown(lab);
  let store: EtcdStore | undefined;
  let prober: Prober | undefined;
  try {
    const podsFile = join(dir, '10-pods.yaml');
    const policyFile = join(dir, POLICY_FILE);
    writeFileSync(podsFile, clusterManifest(o));
    writeFileSync(policyFile, flipPolicy(false));
    const upStart = Date.now();
    const up = await clusterUp({ name: lab, files: [podsFile, policyFile], backend, nodeCount: o.nodes });
    const upMs = Date.now() - upStart;
    ctx.progress.tick(`${backend}: cluster up (${o.nodes}×${o.podsPerNode} pods)`);
    const topology = up.lab.state.topology;
    if (!topology) throw new Error(`cluster ${lab} has no topology`);
    const pod = (name: string): NonNullable<typeof topology>['pods'][number] => {
      const p = topology.pods.find((x) => x.id === `${NAMESPACE}/${name}`);
      if (!p) throw new Error(`cluster ${lab} has no pod ${NAMESPACE}/${name}`);
      return p;
    };
    const client = pod(CLIENT);
    const target = pod(TARGET);
    if (client.node === target.node) throw new Error(`client and target are both on ${client.node}`);
    const nodes = topology.nodes.map((n) => n.name);
    store = clusterStore(lab);
    prober = new Prober({
      netns: client.netns,
      cgroup: join(up.lab.state.cgroupRoot, client.slug),
      address: target.address,
      port: PORT,
      intervalMs: o.probeIntervalMs,
      timeoutMs: o.probeTimeoutMs,
      lifetimeMs: o.capMs + o.flipTimeoutMs * 2 + 60_000,
    });
    await prober.start();
    const samples: FlipSample[] = [];
    const started = Date.now();
    let capped = false;
    for (let k = 0; k < o.flips; k++) {
      if (Date.now() - started > o.capMs) {
        capped = true;
        break;
      }
      const allow = k % 2 === 0;
      samples.push(await oneFlip(o, lab, nodes, store, prober, policyFile, allow));
      ctx.progress.tick(`${backend}: flip ${k + 1}/${o.flips}`);
      // Out of phase with the agents' timers (drift checks), and a pause for the machine.
      await sleep(20 + Math.floor(Math.random() * 30));
    }
    return {
      backend,
      lab,
      targetNode: target.node,
      upMs,
      samples,
      probes: { ...prober.counts },
      flippingMs: Date.now() - started,
      ...(capped ? { capped } : {}),
    };
  } finally {
    await prober?.stop().catch(() => undefined);
    store?.close();
    await labDown(lab);
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureCluster(ctx: BenchContext, o: ClusterBenchOptions): Promise<ClusterBenchData> {
  const wanted = o.backends ?? ORDER;
  const names = ORDER.filter((n) => wanted.includes(n) && availableBackends().includes(n));
  ctx.progress.total(names.length * (1 + o.flips));
  const prefix = o.labPrefix ?? `bcl${process.pid % 100_000}`;
  const runs: ClusterBackendRun[] = [];
  for (const backend of names) runs.push(await measureBackend(ctx, o, backend, `${prefix}${backend[0]}`));
  return { options: o, runs };
}

// ---------------------------------------------------------------------------------------------
// Report

export interface ClusterFigures {
  backend: BackendName;
  flips: number;
  timedOut: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  underTarget: number;
  inForce: { p50: number; p90: number; p99: number; max: number };
  pass: boolean;
}

function quantiles(xs: readonly number[]): { p50: number; p90: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return {
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s.length > 0 ? (s[s.length - 1] as number) : Number.NaN,
  };
}

export function clusterFigures(run: ClusterBackendRun): ClusterFigures {
  const flips = run.samples.flatMap((s) => (s.flipMs === undefined ? [] : [s.flipMs]));
  const inForce = run.samples.flatMap((s) => (s.inForceMs === undefined ? [] : [s.inForceMs]));
  const q = quantiles(flips);
  const timedOut = run.samples.filter((s) => s.flipMs === undefined || s.inForceMs === undefined).length;
  return {
    backend: run.backend,
    flips: run.samples.length,
    timedOut,
    ...q,
    underTarget:
      run.samples.length === 0
        ? Number.NaN
        : run.samples.filter((s) => s.flipMs !== undefined && s.flipMs < TARGET_P99_MS).length /
          run.samples.length,
    inForce: quantiles(inForce),
    pass: timedOut === 0 && flips.length > 0 && q.p99 < TARGET_P99_MS,
  };
}

const f0 = (n: number): string => (Number.isFinite(n) ? n.toFixed(0) : '–');

export function clusterResult(data: ClusterBenchData): BenchScenarioResult {
  const o = data.options;
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const params = { nodes: o.nodes, pods: o.nodes * o.podsPerNode };
  for (const run of data.runs) {
    rows.push(
      summarize(
        run.backend,
        { ...params, figure: 'probe flips' },
        run.samples.flatMap((s) => (s.flipMs === undefined ? [] : [s.flipMs])),
      ),
    );
    rows.push(
      summarize(
        run.backend,
        { ...params, figure: 'all nodes in force' },
        run.samples.flatMap((s) => (s.inForceMs === undefined ? [] : [s.inForceMs])),
      ),
    );
  }
  notes.push(
    `${o.nodes} nodes × ${o.podsPerNode} pods (TCP ${PORT} each), one namespace, a background NetworkPolicy on every filler pod; ` +
      `the flipped NetworkPolicy selects ${NAMESPACE}/${TARGET} (node-2) and allows TCP ${PORT} from pods labelled client (${NAMESPACE}/${CLIENT}, node-1) or from a label nobody has; ` +
      `each flip is one applyManifests of that file to the cluster's etcd; backends take turns, each with its own cluster (etcd + one agent process per node)`,
    `probe flips = start of the write → start of the first of ${o.confirm} consecutive probes with the new outcome; the prober (in the client pod's netns and cgroup) starts a TCP connect every ${o.probeIntervalMs} ms, ` +
      `a connect not done in ${o.probeTimeoutMs} ms or refused counts as denied, so the resolution is ~${o.probeIntervalMs} ms; ` +
      `all nodes in force = start of the write → every agent's /v1/status shows the write's etcd revision (or newer) in force (agents apply, then read the dataplane back, before they say so); ` +
      `percentiles are nearest-rank: with fewer than 100 flips p99 is the maximum`,
  );
  for (const run of data.runs) {
    const fig = clusterFigures(run);
    const allowMs = run.samples.filter((s) => s.to === 'allow').flatMap((s) => s.flipMs ?? []);
    const denyMs = run.samples.filter((s) => s.to === 'deny').flatMap((s) => s.flipMs ?? []);
    const med = (xs: number[]): string => f0(median(xs));
    const writes = run.samples.map((s) => s.writeMs);
    const targetApply = run.samples.flatMap((s) => s.applyMs[run.targetNode] ?? []);
    const mismatch = run.samples.reduce((n, s) => n + s.baselineMismatch, 0);
    const flaps = run.samples.reduce((n, s) => n + s.flaps, 0);
    notes.push(
      `${run.backend}: probe flips p50 ${f0(fig.p50)} / p90 ${f0(fig.p90)} / p99 ${f0(fig.p99)} / max ${f0(fig.max)} ms, ` +
        `${(100 * fig.underTarget).toFixed(0)}% of ${fig.flips} flips under ${TARGET_P99_MS / 1000} s — target p99 < ${TARGET_P99_MS / 1000} s: ${fig.pass ? 'PASS' : 'FAIL'}` +
        `${fig.timedOut > 0 ? ` (${fig.timedOut} flips not seen within ${o.flipTimeoutMs / 1000} s)` : ''}; ` +
        `all nodes in force p50 ${f0(fig.inForce.p50)} / p90 ${f0(fig.inForce.p90)} / p99 ${f0(fig.inForce.p99)} / max ${f0(fig.inForce.max)} ms; ` +
        `median to allow ${med(allowMs)} ms, to deny ${med(denyMs)} ms; etcd write acknowledged after ${med(writes)} ms (median); ` +
        `the target node's agent applied in ${med(targetApply)} ms (median, kernel write + read back, ${targetApply.length} applies); ` +
        `${run.probes.ok + run.probes.denied} probes: ${run.probes.ok} connected, ${run.probes.denied} denied (${run.probes.timeouts} timed out, ${run.probes.refused} refused)` +
        `${mismatch > 0 ? `; ${mismatch} probes before a write did not show the state in force` : ''}` +
        `${flaps > 0 ? `; ${flaps} probes after a flip showed the old outcome again` : ''}; ` +
        `cluster up ${(run.upMs / 1000).toFixed(1)} s${run.capped ? `; stopped at the ${o.capMs / 1000} s cap after ${run.samples.length} flips` : ''}`,
    );
  }
  return { name: 'cluster', unit: 'ms apply → enforced', better: 'lower', rows, notes };
}

export const scenario: BenchScenario = measuredScenario({
  name: 'cluster',
  description:
    'apply-to-enforced: a policy written to etcd until a probe between pods on two nodes flips, and until every agent has it in force (target p99 < 1 s)',
  options: clusterBenchOptions,
  measure: measureCluster,
  result: clusterResult,
});
