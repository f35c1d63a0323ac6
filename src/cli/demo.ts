/**
 * `switchyard demo`: what a new user should see first, end to end, in under two minutes.
 * Each step prints the command a user would type and its output; everything it creates is removed.
 */
import type { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildIR, explain, reachMatrix } from '../calc/index.js';
import { formatIssue, loadManifests, validateManifests } from '../model/index.js';
import { formatReachGrid } from './output.js';
import { EXAMPLES_DIR } from './paths.js';

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

export interface DemoStep {
  title: string;
  command: string;
  run(): Promise<string> | string;
}

function policySteps(): DemoStep[] {
  const walkthrough = join(EXAMPLES_DIR, 'walkthrough');
  const guardrails = join(EXAMPLES_DIR, 'global');
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
        const ir = buildIR(model);
        return ['outside/client', 'shop/backend']
          .map((from) => {
            const e = explain(model, ir, { from, to: 'shop/db', protocol: 'TCP', port: 5432 });
            return [e.summary, e.ingress ? `  ${e.ingress.text}` : ''].join('\n');
          })
          .join('\n');
      },
    },
    {
      title: 'The reach matrix the reference evaluator predicts (the oracle every backend is tested against)',
      command: `switchyard reach ${rel(walkthrough)} --port 8080`,
      run: () => formatReachGrid(reachMatrix(buildIR(loadManifests([walkthrough])), 8080, 'TCP').results),
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
    .action(async () => {
      await runDemo(policySteps());
    });
}
