import cliProgress from 'cli-progress';
import { release } from 'node:os';
import { availableParallelism } from 'node:os';
import { scenarioLoaders } from './registry.js';
import type { BenchReport, BenchScenarioResult } from './results.js';
import type { BenchContext } from './types.js';

export async function runBench(
  names: string[],
  opts: { quick: boolean; progress: boolean },
): Promise<BenchReport> {
  const scenarios: BenchScenarioResult[] = [];
  for (const name of names) {
    const load = scenarioLoaders[name];
    if (!load)
      throw new Error(`unknown bench scenario '${name}' (known: ${Object.keys(scenarioLoaders).join(', ')})`);
    const scenario = await load();
    const bar = opts.progress
      ? new cliProgress.SingleBar(
          {
            format: `${name.padEnd(18)} {bar} {value}/{total} {label}`,
            hideCursor: true,
            clearOnComplete: true,
          },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    let done = 0;
    const ctx: BenchContext = {
      quick: opts.quick,
      progress: {
        total: (n) => bar?.start(n, 0, { label: '' }),
        tick: (label) => bar?.update(++done, { label: label ?? '' }),
      },
    };
    try {
      scenarios.push(await scenario.run(ctx));
    } finally {
      bar?.stop();
    }
  }
  return { machine: { kernel: release(), cpus: availableParallelism(), node: process.version }, scenarios };
}
