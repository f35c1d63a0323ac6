import type { Command } from 'commander';
import { allocate, buildIR, compareReach, reachMatrix } from '../calc/index.js';
import { allocateOptions, loadModelOrFail, parseNodeCount, parsePort, parseProtocol } from './manifests.js';
import { parseFamily } from './options.js';
import { printJson } from './output.js';
import { formatReachView } from './reach-format.js';

export function register(program: Command): void {
  program
    .command('reach')
    .description('the pod×pod matrix the reference evaluator predicts for new connections')
    .argument('<paths...>', 'manifest files or directories')
    .option('--port <port>', 'destination port', parsePort, 80)
    .option('--protocol <protocol>', 'TCP, UDP or SCTP', parseProtocol, 'TCP' as const)
    .option('--nodes <n>', 'nodes to spread unplaced pods over (matters for prefilters)', parseNodeCount)
    .option(
      '--family <4|6>',
      "between the pods' IPv4 (default) or IPv6 addresses (as the lab gives them)",
      parseFamily,
    )
    .option('--full', 'the pod×pod grid even above 20 pods (default: a summary per namespace)')
    .option('--json', 'machine-readable matrix (same shape as `lab reach --json`)')
    .action(
      (
        paths: string[],
        opts: {
          port: number;
          protocol: 'TCP' | 'UDP' | 'SCTP';
          nodes?: number;
          full?: boolean;
          json?: boolean;
          family?: 4 | 6;
        },
      ) => {
        const model = loadModelOrFail(paths);
        const ir = buildIR(model, allocate(model, {}, allocateOptions(opts)));
        const matrix = reachMatrix(ir, opts.port, opts.protocol, opts.family);
        if (opts.json) return printJson(opts.family ? { ...matrix, family: opts.family } : matrix);
        process.stdout.write(
          `${opts.protocol}/${opts.port}${opts.family === 6 ? ' over IPv6' : ''} predicted\n`,
        );
        const view = {
          matrix,
          comparison: compareReach(matrix, undefined),
          compared: false,
          full: opts.full === true,
        };
        process.stdout.write(formatReachView(view) + '\n');
      },
    );
}
