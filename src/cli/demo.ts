/**
 * `switchyard demo`: what a new user should see first, end to end, in under two minutes.
 * Each step prints the command a user would type and its output; everything it creates is removed.
 */
import { DEFAULT_POLICY_MODE, formatTableModeSummary, tableModeSummary } from '../ir/decision-table.js';
import type { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allocate, buildIR, explain, reachMatrix, type ReachMatrix } from '../calc/index.js';
import type { BackendName } from '../dataplane/backend.js';
import { availableBackends, loadBackend } from '../dataplane/registry.js';
import { allLabSummaries, converge, labDown, measureReach, probeService } from '../lab/index.js';
import { formatIssue, loadManifests, validateManifests, type Model } from '../model/index.js';
import { agentSteps } from './demo-agent.js';
import { clusterSteps, DEMO_CLUSTER } from './demo-cluster.js';
import { outsideStep } from './demo-outside.js';
import { formatTable } from './output.js';
import { formatReachGrid, reachLegend } from './reach-format.js';
import { EXAMPLES_DIR } from './paths.js';
import { explanationText } from './explain.js';
import type { DemoStep } from './demo-step.js';

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function policySteps(): DemoStep[] {
  const walkthrough = join(EXAMPLES_DIR, 'walkthrough');
  const guardrails = join(EXAMPLES_DIR, 'global');
  const services = join(EXAMPLES_DIR, 'services');
  const rel = (p: string): string => p.replace(EXAMPLES_DIR, 'examples');
  return [
    {
      title: 'Validate Kubernetes manifests and Switchyard kinds',
      command: `switchyard validate ${rel(walkthrough)} ${rel(guardrails)}`,
      run: () => {
        const { model, files } = validateManifests([walkthrough, guardrails]);
        if (!model) throw new Error('the bundled examples do not validate');
        return `ok: ${files.length} files, ${model.pods.length} pods, ${model.networkPolicies.length} network policies, ${model.globalPolicies.length} global policies, ${model.prefilters.length} prefilter`;
      },
    },
    {
      title: 'Bad input is named precisely and changes nothing',
      command: 'switchyard validate broken.yaml',
      run: () => {
        const dir = mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
        try {
          const file = join(dir, 'broken.yaml');
          writeFileSync(
            file,
            [
              'apiVersion: networking.k8s.io/v1',
              'kind: NetworkPolicy',
              'metadata: { name: typo, namespace: default }',
              'spec:',
              '  podSelector: {}',
              '  ingres:                 # a typo that lenient tools silently ignore',
              '    - from: [{ podSelector: {} }]',
              '  egress:',
              '    - to: [{ ipBlock: { cidr: 198.18.0.0/33 } }]',
              '',
            ].join('\n'),
          );
          const { issues } = validateManifests([file]);
          return issues.map((i) => formatIssue({ ...i, file: 'broken.yaml' })).join('\n');
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    },
    {
      title: 'Explain a verdict: which policies select each end, which rule decided',
      command: `switchyard explain ${rel(walkthrough)} ${rel(guardrails)} --from outside/client --to shop/db --port 5432`,
      run: () => {
        const model = loadManifests([walkthrough, guardrails]);
        const ir = buildIR(model, allocate(model));
        return ['outside/client', 'shop/backend']
          .map((from) => {
            const e = explain(model, ir, { from, to: 'shop/db', protocol: 'TCP', port: 5432 });
            return [e.summary, e.ingress ? `  ${e.ingress.text}` : ''].join('\n');
          })
          .join('\n');
      },
    },
    {
      title:
        'Explain through a Service: each backend pod and its target port, then the policy that decides there',
      command: `switchyard explain ${rel(walkthrough)} ${rel(guardrails)} ${rel(services)} --from shop/frontend --to svc/web/web:80`,
      run: () => {
        const model = loadManifests([walkthrough, guardrails, services]);
        const ir = buildIR(model, allocate(model));
        const text = explanationText(
          explain(model, ir, { from: 'shop/frontend', to: 'svc/web/web:80', protocol: 'TCP' }),
        );
        // The first backend in full, the others by their verdict line.
        const lines = text.trimEnd().split('\n');
        const firstOther = lines.findIndex((l, i) => i > 3 && l.startsWith('  → '));
        return lines.filter((l, i) => firstOther < 0 || i < firstOther || l.startsWith('  → ')).join('\n');
      },
    },
    {
      title: 'The reach matrix the reference evaluator predicts (the oracle every backend is tested against)',
      command: `switchyard reach ${rel(walkthrough)} --port 8080`,
      run: () => {
        const model = loadManifests([walkthrough]);
        return (
          formatReachGrid(reachMatrix(buildIR(model, allocate(model)), 8080, 'TCP')) +
          '\n' +
          reachLegend(false)
        );
      },
    },
  ];
}

/** The lab the demo creates and always removes; refuses to touch a lab of the same name it did not make. */
const DEMO_LAB = 'demotour';
const SERVICE = 'svc/web/web:80';
const SERVICE_PROBES = 300;
/** Lab pods are dual-stack: 5432 is also measured between their IPv6 addresses. */
const PROBES = [
  { port: 80, protocol: 'TCP' as const, family: 4 as const },
  { port: 8080, protocol: 'TCP' as const, family: 4 as const },
  { port: 5432, protocol: 'TCP' as const, family: 4 as const },
  { port: 5432, protocol: 'TCP' as const, family: 6 as const },
];

function disagreements(predicted: ReachMatrix, measured: ReachMatrix): string[] {
  const out: string[] = [];
  for (const [src, row] of Object.entries(predicted.outcomes))
    for (const [dst, want] of Object.entries(row))
      if (measured.outcomes[src]?.[dst] !== want) out.push(`${src} → ${dst} predicted ${want}`);
  return out;
}

/** What the backend steps leave for the summary and counters steps after them. */
interface LabTour {
  rows: (string | number)[][];
  last?: { backend: string; nodes: { name: string; netns: string }[] };
}

function labUpStep(model: Model, files: string[]): DemoStep {
  return {
    title: 'Bring up a lab: 2 nodes, pods as network namespaces, probe servers on every declared port',
    command: `switchyard lab up examples/walkthrough examples/global examples/services --lab ${DEMO_LAB} --policy-mode table`,
    run: async () => {
      if (allLabSummaries().some((l) => l.name === DEMO_LAB))
        throw new Error(
          `a lab named '${DEMO_LAB}' exists already: remove it with 'switchyard lab down --lab ${DEMO_LAB}'`,
        );
      // Decision tables, so every backend step shows them (the lab keeps the mode on apply).
      const r = await converge({
        name: DEMO_LAB,
        model,
        files,
        mode: 'up',
        backend: 'none',
        policyMode: 'table',
      });
      const pods = (r.state.topology?.pods ?? []).map(
        (p) => `${p.id} on ${p.node} at ${p.address}${p.addressV6 ? ` and ${p.addressV6}` : ''}`,
      );
      return [
        `up in ${r.durationMs.toFixed(0)} ms, no policy enforced yet:`,
        ...pods.map((p) => `  ${p}`),
      ].join('\n');
    },
  };
}

/** Measures every probe and compares with the prediction; the IPv4 5432 grid goes first. */
async function compareReach(): Promise<{ lines: string[]; agree: number; total: number; reachMs: number }> {
  const lines: string[] = [];
  let agree = 0;
  let total = 0;
  let reachMs = 0;
  for (const probe of PROBES) {
    const measured = await measureReach(DEMO_LAB, probe);
    reachMs += measured.durationMs;
    const diff = disagreements(measured.predicted, measured.matrix);
    const pairs = Object.values(measured.predicted.results).reduce(
      (n, row) => n + Object.keys(row).length,
      0,
    );
    total += pairs;
    agree += pairs - diff.length;
    const name = `${probe.family === 6 ? 'IPv6 ' : ''}${probe.protocol}/${probe.port}`;
    lines.push(...diff.map((d) => `  MISMATCH ${name}: ${d}`));
    if (probe.port === 5432 && probe.family === 4)
      lines.unshift(`measured ${name}:`, formatReachGrid(measured.matrix));
    if (probe.family === 6) {
      const allowed = Object.values(measured.matrix.results).reduce(
        (n, row) => n + Object.values(row).filter(Boolean).length,
        0,
      );
      lines.push(`${name}: ${allowed} of ${pairs} pairs allowed between the pods' IPv6 addresses`);
    }
  }
  return { lines, agree, total, reachMs };
}

/** Probes the service from outside/client: the answering pods and counts, and the summary line. */
async function serviceSpread(): Promise<{ spread: string; line: string }> {
  const svc = await probeService(DEMO_LAB, { from: 'outside/client', to: SERVICE, count: SERVICE_PROBES });
  const spread = Object.entries(svc.answered)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([pod, n]) => `${pod.split('/')[1]} ${n}`)
    .join(', ');
  return {
    spread,
    line: `service ${SERVICE} from outside/client, ${SERVICE_PROBES} connections: ${spread}; ${svc.failures} failed; p50 ${svc.latencyMs.p50} ms`,
  };
}

function backendStep(model: Model, files: string[], backend: BackendName, tour: LabTour): DemoStep {
  return {
    title: `Enforce the same policies and services with ${backend}; measure every pair and the service with real connections`,
    command: `switchyard lab apply … --backend ${backend} && switchyard lab reach --port 5432 && switchyard lab probe --from outside/client --to ${SERVICE} --count ${SERVICE_PROBES}`,
    run: async () => {
      const r = await converge({ name: DEMO_LAB, model, files, mode: 'apply', backend });
      const { lines, agree, total, reachMs } = await compareReach();
      const svc = await serviceSpread();
      lines.push(svc.line);
      tour.rows.push([
        backend,
        `${r.durationMs.toFixed(0)} ms`,
        `${agree}/${total}`,
        `${reachMs.toFixed(0)} ms`,
        svc.spread,
      ]);
      tour.last = { backend, nodes: r.state.topology?.nodes ?? [] };
      lines.push(
        `${agree} of ${total} pairs on ${PROBES.length} probes (one over IPv6) agree with the prediction`,
      );
      const mode = r.state.policyMode ?? DEFAULT_POLICY_MODE;
      lines.push(`policy decided in ${formatTableModeSummary(tableModeSummary(r.state.ir.ruleSets, mode))}`);
      return lines.join('\n');
    },
  };
}

function countersStep(tour: LabTour): DemoStep {
  return {
    title: 'Counters read from the kernel: which rule let the packets through',
    command: `switchyard lab counters --lab ${DEMO_LAB}`,
    run: async () => {
      const last = tour.last;
      if (!last) return 'no backend registered';
      const backend = await loadBackend(last.backend as BackendName);
      const counters: (string | number)[][] = [];
      for (const node of last.nodes) {
        const target = { scope: DEMO_LAB, node: node.name, netns: node.netns };
        for (const c of await backend.counters(target))
          if (c.packets > 0 && c.endpoint)
            counters.push([node.name, c.endpoint, c.direction ?? '', c.rule, c.packets]);
      }
      return (
        `${last.backend}:\n` + formatTable(['node', 'endpoint', 'direction', 'rule', 'packets'], counters)
      );
    },
  };
}

function labSteps(model: Model, files: string[]): DemoStep[] {
  const tour: LabTour = { rows: [] };
  return [
    labUpStep(model, files),
    ...availableBackends().map((backend) => backendStep(model, files, backend, tour)),
    outsideStep(DEMO_LAB, files),
    {
      title:
        'Side by side: the verdicts the reference evaluator predicted on every backend, and the service spread',
      command: '(summary of the steps above)',
      run: () =>
        formatTable(['backend', 'apply', 'pairs agreeing', 'reach measured in', 'service spread'], tour.rows),
    },
    countersStep(tour),
    ...agentSteps(DEMO_LAB, () => tour.last?.backend as BackendName | undefined),
    {
      title: 'Clean up: agents, namespaces, cgroups, pins, probe servers',
      command: `switchyard lab down --lab ${DEMO_LAB}`,
      run: async () => {
        await labDown(DEMO_LAB);
        return 'removed';
      },
    },
  ];
}

export async function runDemo(steps: DemoStep[]): Promise<void> {
  const started = Date.now();
  for (const [i, step] of steps.entries()) {
    process.stdout.write(`\n${bold(`[${i + 1}/${steps.length}] ${step.title}`)}\n$ ${step.command}\n`);
    const out = await step.run();
    process.stdout.write(out.trimEnd() + '\n');
  }
  process.stdout.write(`\ndemo finished in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('a guided tour: validate, explain, predict, then enforce in a lab and compare')
    .option('--no-lab', 'only the steps that need no root (no namespaces, no kernel changes)')
    .action(async (opts: { lab: boolean }) => {
      const steps = policySteps();
      const root = process.getuid?.() === 0;
      if (opts.lab && root) {
        const files = ['walkthrough', 'global', 'services'].map((d) => join(EXAMPLES_DIR, d));
        steps.push(...labSteps(loadManifests(files), files));
        if (availableBackends().includes('ebpf')) steps.push(...clusterSteps());
      }
      try {
        await runDemo(steps);
      } finally {
        for (const lab of [DEMO_LAB, DEMO_CLUSTER])
          if (opts.lab && root && allLabSummaries().some((l) => l.name === lab)) await labDown(lab);
      }
      if (opts.lab && !root)
        process.stdout.write('\n(run as root to see the lab steps: real namespaces and packets)\n');
    });
}
