import { once } from 'node:events';
import type { Command } from 'commander';
import { allocate, buildIR } from '../calc/index.js';
import {
  DEFAULT_POLICY_MODE,
  formatTableModeSummary,
  tableModeSummary,
  type PolicyMode,
} from '../ir/decision-table.js';
import { irForNode } from '../ir/slice.js';
import { BACKEND_NAMES, type BackendName } from '../dataplane/backend.js';
import { loadBackend } from '../dataplane/registry.js';
import { CliError, printJson } from './output.js';
import { loadModelOrFail, parseNodeCount } from './manifests.js';
import { policyModeOption } from './options.js';

export function register(program: Command): void {
  program
    .command('compile')
    .description('print what a backend would install (ir: the backend-neutral IR as JSON)')
    .argument('<paths...>', 'manifest files or directories')
    .option('--backend <name>', `ir, ${BACKEND_NAMES.join(', ')}`, 'ir')
    .option('--node <name>', 'only this node (default: every node)')
    .option('--nodes <n>', 'nodes to spread unplaced pods over', parseNodeCount)
    .addOption(policyModeOption(DEFAULT_POLICY_MODE))
    .option(
      '--json',
      'machine-readable: the IR (--backend ir), else {backend, policyMode, plans: [{node, summary, text}]}',
    )
    .action(async (paths: string[], opts: CompileOptions) => {
      if (opts.backend !== 'ir' && !BACKEND_NAMES.includes(opts.backend as BackendName))
        throw new CliError(`--backend must be ir, ${BACKEND_NAMES.join(', ')}; not '${opts.backend}'`, 2);
      const model = loadModelOrFail(paths);
      const policyMode = opts.policyMode ?? DEFAULT_POLICY_MODE;
      const ir = buildIR(model, allocate(model, {}, opts.nodes ? { nodeCount: opts.nodes } : {}), {
        policyMode,
      });
      const nodes = ir.nodes.map((n) => n.name);
      if (opts.node && !nodes.includes(opts.node))
        throw new CliError(`no node '${opts.node}' (nodes: ${nodes.join(', ')})`, 2);
      if (opts.backend === 'ir') return printJson(opts.node ? irForNode(ir, opts.node) : ir);
      const backend = await loadBackend(opts.backend as BackendName);
      const chosen = opts.node ? [opts.node] : nodes;
      // What the kernel would refuse for its size, said now rather than after minutes of loading.
      const refused = chosen.flatMap((node) =>
        (backend.limits?.(ir, node) ?? []).map((l) => `node ${node}: ${l}`),
      );
      if (refused.length > 0)
        throw new CliError(`${backend.name} cannot install this:\n${refused.join('\n')}`);
      // One node's text at a time: a large cluster's plans never sit in memory together (also
      // with --json: the array is written element by element).
      if (opts.json)
        await writeOut(`{"backend":${JSON.stringify(backend.name)},"policyMode":"${policyMode}","plans":[\n`);
      for (const [i, node] of chosen.entries()) {
        const plan = backend.render(ir, node);
        const summary = formatTableModeSummary(tableModeSummary(irForNode(ir, node).ruleSets, policyMode));
        await writeOut(
          opts.json
            ? `${i > 0 ? ',\n' : ''}${JSON.stringify({ node, summary, text: plan.text })}`
            : `${i > 0 ? '\n' : ''}# ${plan.backend} plan for node ${node}\n# ${summary}\n${plan.text.trimEnd()}\n`,
        );
      }
      if (opts.json) await writeOut('\n]}\n');
    });
}

interface CompileOptions {
  backend: string;
  json?: boolean;
  node?: string;
  nodes?: number;
  policyMode?: PolicyMode;
}

/** Writes to stdout, waiting while the pipe is full. */
async function writeOut(text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain');
}
