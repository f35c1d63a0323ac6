import type { Command } from 'commander';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runBench } from '../bench/runner.js';
import { scenarioNames } from '../bench/registry.js';
import { scenarioSvg, type BenchRow, type BenchScenarioResult } from '../bench/results.js';
import { formatTable, printJson } from './output.js';

function renderScenario(s: BenchScenarioResult): string {
  // A ratio only means something between backends measured with the same parameters.
  const key = (params: BenchRow['params']): string => JSON.stringify(params);
  const best = new Map<string, number>();
  for (const r of s.rows) {
    const b = best.get(key(r.params));
    if (b === undefined || (s.better === 'lower' ? r.median < b : r.median > b))
      best.set(key(r.params), r.median);
  }
  const fmt = (n: number): string => (Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(3));
  const rows = s.rows.map((r) => {
    const b = best.get(key(r.params)) as number;
    return [
      r.backend,
      Object.entries(r.params)
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
      fmt(r.median),
      `${fmt(r.p10)}–${fmt(r.p90)}`,
      r.samples.length,
      (s.better === 'lower' ? r.median / b : b / r.median).toFixed(2) + 'x',
    ];
  });
  const head = `${s.name} (${s.unit}, ${s.better} is better)`;
  const notes = (s.notes ?? []).map((n) => `  note: ${n}`).join('\n');
  return [
    head,
    formatTable(['backend', 'params', 'median', 'p10–p90', 'n', 'vs best at same params'], rows),
    notes,
  ]
    .filter(Boolean)
    .join('\n');
}

export function register(program: Command): void {
  program
    .command('bench')
    .description('measure scenarios on every backend side by side in one run')
    .argument('[scenario...]', `scenarios to run (default: all): ${scenarioNames().join(', ')}`)
    .option('--quick', 'fewer repetitions; every scenario under 2 minutes', false)
    .option('--json [file]', 'write the JSON report (to stdout when no file is given)')
    .option('--svg <dir>', 'write one SVG chart per scenario into DIR')
    .action(async (names: string[], opts: { quick: boolean; json?: string | boolean; svg?: string }) => {
      const selected = names.length > 0 ? names : scenarioNames();
      const report = await runBench(selected, { quick: opts.quick, progress: process.stderr.isTTY === true });
      if (opts.svg) {
        mkdirSync(opts.svg, { recursive: true });
        for (const s of report.scenarios) writeFileSync(join(opts.svg, `${s.name}.svg`), scenarioSvg(s));
      }
      if (opts.json === true) return printJson(report);
      if (typeof opts.json === 'string') writeFileSync(opts.json, JSON.stringify(report, null, 2) + '\n');
      process.stdout.write(
        `machine: kernel ${report.machine.kernel}, ${report.machine.cpus} cpus, node ${report.machine.node}\n\n`,
      );
      process.stdout.write(report.scenarios.map(renderScenario).join('\n\n') + '\n');
    });
}
