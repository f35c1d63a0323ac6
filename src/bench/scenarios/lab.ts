import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { converge, labDown, measureReach } from '../../lab/index.js';
import type { Model } from '../../model/index.js';
import { summarize } from '../stats.js';
import type { BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { benchModel } from './support/manifests.js';

/**
 * How long `lab up` takes for 27 and 100 pods (namespaces, veths, routes, cgroups, probe server),
 * and how much memory the probe server and the CLI peak at. Rows are milliseconds to a lab whose
 * probe servers answer; notes add memory and the reach matrix time.
 */

const LAB = 'bench-lab';
const SIZES = [27, 100];

/** `pods` pods spread over 3 namespaces, each serving 80 and 81 on TCP and UDP like x/y/z. */
function model(pods: number): Model {
  const namespaces = ['x', 'y', 'z'];
  const docs = namespaces.map(
    (n) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${n}\n  labels: { ns: ${n} }\n`,
  );
  for (let i = 0; i < pods; i++) {
    const ns = namespaces[i % namespaces.length] as string;
    const ports = [80, 81]
      .flatMap((p) => ['TCP', 'UDP'].map((proto) => `        - { containerPort: ${p}, protocol: ${proto} }`))
      .join('\n');
    docs.push(
      `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p${i}\n  namespace: ${ns}\n  labels: { pod: p${i} }\n` +
        `spec:\n  containers:\n    - name: c\n      ports:\n${ports}\n`,
    );
  }
  return benchModel('bench', 'bench.yaml', docs);
}

/** Peak resident memory of a process in MiB (VmHWM). */
function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

async function run(ctx: BenchContext): Promise<BenchScenarioResult> {
  const reps = ctx.quick ? 1 : 3;
  ctx.progress.total(SIZES.length * reps);
  const rows = [];
  const notes: string[] = [];
  await labDown(LAB);
  for (const size of SIZES) {
    const m = model(size);
    const samples: number[] = [];
    const serverPeak: number[] = [];
    const reach: number[] = [];
    for (let rep = 0; rep < reps; rep++) {
      const start = performance.now();
      try {
        const r = await converge({ name: LAB, model: m, files: [], mode: 'up', nodeCount: 2 });
        samples.push(performance.now() - start);
        const pid = r.state.probe?.pid;
        if (pid) serverPeak.push(peakRssMiB(pid));
        reach.push((await measureReach(LAB, { port: 80, protocol: 'TCP' })).durationMs);
      } finally {
        await labDown(LAB);
      }
      ctx.progress.tick(`${size} pods`);
    }
    rows.push(summarize('lab', { pods: size }, samples));
    notes.push(
      `${size} pods: probe server peak ${Math.max(...serverPeak).toFixed(0)} MiB, ` +
        `${size}×${size} TCP reach matrix ${Math.min(...reach)}–${Math.max(...reach)} ms`,
    );
  }
  notes.push(`CLI (this process) peak ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
  return { name: 'lab', unit: 'ms to lab up', better: 'lower', rows, notes };
}

export const scenario: BenchScenario = {
  name: 'lab',
  description: 'time and peak memory to bring up labs of 27 and 100 pods, and their reach matrices',
  run,
};
