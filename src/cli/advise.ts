import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ZodError } from 'zod';
import { advise, parseWorkload, workloadFromIR, type Advice } from '../advise/index.js';
import { probeCapabilities } from '../advise/probe.js';
import type { BenchReport } from '../bench/results.js';
import { runBench } from '../bench/runner.js';
import { scenarioNames } from '../bench/registry.js';
import { allocate, buildIR } from '../calc/index.js';
import { loadModelOrFail } from './manifests.js';
import { CliError, formatTable, printJson } from './output.js';
import { errorMessage } from '../util/errors.js';

/** Scenarios whose numbers the advisor reads, in the order it weighs them. */
const ADVICE_SCENARIOS = ['policy', 'set-update', 'services', 'prefilter', 'observe'];

function readWorkload(file: string): unknown {
  try {
    return parseYaml(readFileSync(file, 'utf8')) ?? {};
  } catch (e) {
    throw new CliError(`${file}: ${errorMessage(e)}`, 1, { cause: e });
  }
}

function render(a: Advice): string {
  const rows = a.recommendations.map((r) => [
    r.concern,
    [r.choice, ...r.tiedWith].join(' = '),
    r.measured ? 'measured' : 'rule of thumb',
    r.advice,
  ]);
  const reasons = a.recommendations.flatMap((r) => r.reasons.map((why) => `  ${r.concern}: ${why}`));
  return [
    a.summary,
    '',
    formatTable(['concern', 'use', 'basis', 'advice'], rows),
    '',
    'why:',
    ...reasons,
    '',
    `ties: ${a.tieRule}; a tied concern votes for each tied backend (a = b in "use").`,
  ].join('\n');
}

export function register(program: Command): void {
  program
    .command('advise')
    .description(
      'recommend a backend per concern from a workload and bench results, with the numbers behind it',
    )
    .option('--workload <file>', 'workload description (YAML/JSON; see docs/advise.md)')
    .option(
      '--manifests <paths...>',
      'derive the workload from manifests (combined with --workload, which wins)',
    )
    .option(
      '--bench <file>',
      'bench results (`switchyard bench --json FILE`); default: run the quick benches',
    )
    .option('--no-bench', 'advise from rules of thumb only, without measuring')
    .option('--json', 'machine-readable advice')
    .action(
      async (opts: { workload?: string; manifests?: string[]; bench?: string | boolean; json?: boolean }) => {
        const model = opts.manifests ? loadModelOrFail(opts.manifests) : undefined;
        const fromManifests = model ? workloadFromIR(buildIR(model, allocate(model))) : {};
        const given = opts.workload ? readWorkload(opts.workload) : {};
        let workload;
        try {
          workload = parseWorkload({ ...fromManifests, ...(given as object) });
        } catch (e) {
          if (e instanceof ZodError)
            throw new CliError(
              `${opts.workload ?? 'workload'}: ${e.issues.map((i) => `${i.path.join('.') || '(document)'}: ${i.message}`).join('; ')}`,
            );
          throw e;
        }
        let report: BenchReport | undefined;
        if (typeof opts.bench === 'string')
          report = JSON.parse(readFileSync(opts.bench, 'utf8')) as BenchReport;
        else if (opts.bench !== false) {
          const available = ADVICE_SCENARIOS.filter((s) => scenarioNames().includes(s));
          if (available.length > 0) {
            process.stderr.write(`measuring (quick): ${available.join(', ')}\n`);
            report = await runBench(available, { quick: true, progress: process.stderr.isTTY === true });
          }
        }
        const capabilities = probeCapabilities();
        if (Object.keys(capabilities).length === 0)
          process.stderr.write('not root: kernel features not probed; every backend counts as runnable\n');
        const result = advise(workload, report, capabilities);
        if (opts.json) return printJson({ workload, ...result });
        process.stdout.write(render(result) + '\n');
      },
    );
}
