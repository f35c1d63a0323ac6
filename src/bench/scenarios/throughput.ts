/**
 * TCP throughput pod to pod with iperf3, per backend (none, iptables, nftables, ebpf), in a lab of
 * two pods on one node where a NetworkPolicy lets only the client reach the server's port 5201,
 * and the CPU the two pods' cgroups burn per Gbit moved. Samples are iperf3's one-second
 * intervals (the first of each run, slow start and connection setup, is left out); the pods'
 * cpu.stat usage_usec is read as each interval line arrives, so both figures cover the same second.
 *
 * `throughput` and `throughput-cpu` are two views of one measurement: run together, the second
 * reuses the first's data instead of measuring again.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableBackends } from '../../dataplane/registry.js';
import { converge, labDown, type LabBackend, type LabPod } from '../../lab/index.js';
import type { Model } from '../../model/index.js';
import { requireTool, spawnInNetns } from '../../netns/index.js';
import { summarize } from '../stats.js';
import type { BenchRow, BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { allowYaml, benchModel, namespaceYaml, podYaml } from './support/manifests.js';

export interface ThroughputOptions {
  seconds: number;
  runs: number;
  backends?: readonly LabBackend[];
}

export function throughputOptions(quick: boolean): ThroughputOptions {
  return quick ? { seconds: 3, runs: 3 } : { seconds: 10, runs: 5 };
}

const PORT = 5201;
const ORDER: readonly LabBackend[] = ['none', 'iptables', 'nftables', 'ebpf'];

function model(): Model {
  const ns = 'bench';
  return benchModel('throughput', 'throughput.yaml', [
    namespaceYaml(ns),
    podYaml({ ns, name: 'client', ports: [80] }),
    podYaml({ ns, name: 'server', ports: [80] }),
    allowYaml({
      ns,
      name: 'iperf-from-client',
      pods: 'server',
      direction: 'ingress',
      peer: 'client',
      ports: [PORT],
    }),
  ]);
}

interface Interval {
  gbit: number;
  gbps: number;
  cpuSeconds: number;
}

export interface ThroughputData {
  intervals: Map<LabBackend, Interval[]>;
  options: ThroughputOptions;
}

function usageUsec(cgroup: string): number {
  const m = /^usage_usec (\d+)$/m.exec(readFileSync(join(cgroup, 'cpu.stat'), 'utf8'));
  if (!m) throw new Error(`no usage_usec in ${cgroup}/cpu.stat`);
  return Number(m[1]);
}

/** Lines of a child's stdout as they arrive. */
function onLines(child: ChildProcess, fn: (line: string) => void): void {
  let pending = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) fn(l);
  });
}

function exited(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
}

/** Starts `iperf3 -s -1` in the server pod and resolves once it listens. */
async function startServer(pod: LabPod, cgroup: string): Promise<ChildProcess> {
  const child = spawnInNetns({
    netns: pod.netns,
    cgroup,
    // --forceflush: stdout is a pipe, and the "listening" line must not sit in a buffer.
    argv: [requireTool('iperf3'), '-s', '-1', '-p', String(PORT), '--forceflush'],
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const listening = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('iperf3 server did not start within 5 s')), 5000);
    onLines(child, (line) => {
      if (line.includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 server exited (${code}) before listening`));
    });
  });
  try {
    await listening;
  } catch (e) {
    if (child.exitCode === null) child.kill('SIGKILL');
    throw e;
  }
  return child;
}

const INTERVAL = /^\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+[\d.]+\s+\w?Bytes\s+([\d.]+)\s+Mbits\/sec/;

/** One iperf3 run; intervals after the first, each with the pods' CPU over the same second. */
async function runClient(
  client: LabPod,
  server: LabPod,
  cgroups: readonly string[],
  seconds: number,
): Promise<Interval[]> {
  const child = spawnInNetns({
    netns: client.netns,
    cgroup: cgroups[0],
    argv: [
      requireTool('iperf3'),
      ...[
        '-c',
        server.address,
        '-p',
        String(PORT),
        '-t',
        String(seconds),
        '-i',
        '1',
        '-f',
        'm',
        '--forceflush',
      ],
    ],
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const cpu = (): number => cgroups.reduce((sum, cg) => sum + usageUsec(cg), 0);
  const out: Interval[] = [];
  let last: number | undefined;
  onLines(child, (line) => {
    const m = INTERVAL.exec(line);
    if (!m || /sender|receiver|omitted/.test(line)) return;
    const now = cpu();
    const duration = Number(m[2]) - Number(m[1]);
    const gbps = Number(m[3]) / 1000;
    if (last !== undefined && duration > 0.5)
      out.push({ gbps, gbit: gbps * duration, cpuSeconds: (now - last) / 1e6 });
    last = now;
  });
  const code = await exited(child);
  if (code !== 0) throw new Error(`iperf3 client failed (${code}): ${stderr.trim()}`);
  if (out.length === 0) throw new Error('iperf3 reported no interval');
  return out;
}

interface LabPods {
  client: LabPod;
  server: LabPod;
  cgroups: [string, string];
}

/** Brings the lab to `backend` (switching removes the previous backend's rules first). */
async function useBackend(lab: string, backend: LabBackend): Promise<LabPods> {
  const r = await converge({ name: lab, model: model(), files: [], mode: 'up', backend, nodeCount: 1 });
  const pods = r.state.topology?.pods ?? [];
  const client = pods.find((p) => p.id === 'bench/client');
  const server = pods.find((p) => p.id === 'bench/server');
  if (!client || !server) throw new Error('lab has no bench/client or bench/server');
  return {
    client,
    server,
    cgroups: [join(r.state.cgroupRoot, client.slug), join(r.state.cgroupRoot, server.slug)],
  };
}

async function oneRun(pods: LabPods, seconds: number): Promise<Interval[]> {
  const srv = await startServer(pods.server, pods.cgroups[1]);
  try {
    return await runClient(pods.client, pods.server, pods.cgroups, seconds);
  } finally {
    if (srv.exitCode === null) srv.kill('SIGKILL');
    await exited(srv).catch(() => undefined);
  }
}

let memo: { quick: boolean; data: Promise<ThroughputData> } | undefined;

export async function measureThroughput(ctx: BenchContext, opts: ThroughputOptions): Promise<ThroughputData> {
  requireTool('iperf3');
  const wanted = opts.backends ?? ORDER;
  const names = ORDER.filter((n) => wanted.includes(n) && (n === 'none' || availableBackends().includes(n)));
  ctx.progress.total(names.length * opts.runs);
  const intervals = new Map<LabBackend, Interval[]>(names.map((n) => [n, []]));
  const lab = `bench-tp${process.pid % 100_000}`;
  await labDown(lab);
  try {
    // Backends take turns run by run, so a change in the machine's load hits all of them alike.
    for (let run = 0; run < opts.runs; run++) {
      for (const name of names) {
        const pods = await useBackend(lab, name);
        intervals.get(name)?.push(...(await oneRun(pods, opts.seconds)));
        ctx.progress.tick(`${name} ${run + 1}/${opts.runs}`);
      }
    }
  } finally {
    await labDown(lab);
  }
  return { intervals, options: opts };
}

/** The measurement for this process and mode, made once even when both views are asked for. */
function shared(ctx: BenchContext): Promise<ThroughputData> {
  if (!memo || memo.quick !== ctx.quick) {
    const data = measureThroughput(ctx, throughputOptions(ctx.quick));
    memo = { quick: ctx.quick, data };
    data.catch(() => (memo = undefined));
  } else ctx.progress.total(0);
  return memo.data;
}

const METHOD = (o: ThroughputOptions): string =>
  `iperf3 (one TCP stream) from bench/client to bench/server on one node, ${o.runs} runs of ${o.seconds} s per backend, backends taking turns run by run; samples are the 1-second intervals after the first of each run; policy: only the client may reach the server's TCP ${PORT} (backend none: no policy)`;

export function throughputResult(data: ThroughputData): BenchScenarioResult {
  const rows: BenchRow[] = [...data.intervals].map(([backend, iv]) =>
    summarize(
      backend,
      { streams: 1, seconds: data.options.seconds },
      iv.map((i) => i.gbps),
    ),
  );
  return {
    name: 'throughput',
    unit: 'Gbit/s',
    better: 'higher',
    rows,
    notes: [METHOD(data.options), 'see throughput-cpu for the CPU the pods spent per Gbit'],
  };
}

export function throughputCpuResult(data: ThroughputData): BenchScenarioResult {
  const rows: BenchRow[] = [...data.intervals].map(([backend, iv]) =>
    summarize(
      backend,
      { streams: 1, seconds: data.options.seconds },
      iv.map((i) => i.cpuSeconds / i.gbit),
    ),
  );
  return {
    name: 'throughput-cpu',
    unit: 'CPU-s per Gbit',
    better: 'lower',
    rows,
    notes: [
      METHOD(data.options),
      "CPU = the change in usage_usec of both pods' cgroups (cpu.stat) over each interval: iperf3 itself plus the softirq work the kernel did on those tasks' time (the veth and node path runs mostly there). Work done by ksoftirqd or on the other CPU's idle time is not charged to the pods, and kernels with IRQ time accounting charge softirq to no task",
    ],
  };
}

export const scenario: BenchScenario = {
  name: 'throughput',
  description: 'iperf3 pod-to-pod throughput per backend, with an allow policy on the server pod',
  run: async (ctx) => throughputResult(await shared(ctx)),
};

export const cpuScenario: BenchScenario = {
  name: 'throughput-cpu',
  description: "CPU seconds the two pods' cgroups spend per Gbit in the throughput measurement",
  run: async (ctx) => throughputCpuResult(await shared(ctx)),
};
