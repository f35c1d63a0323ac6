import type { Command } from 'commander';
import { formatIssue, validateManifests } from '../model/index.js';
import { printJson } from './output.js';

export function register(program: Command): void {
  program
    .command('validate')
    .description('check manifests; print every problem as file:line: Kind ns/name: field: message')
    .argument('<paths...>', 'YAML files or directories (searched recursively)')
    .option('--json', 'machine-readable result')
    .action((paths: string[], opts: { json?: boolean }) => {
      const { model, issues, files } = validateManifests(paths);
      if (opts.json) {
        printJson({ valid: !!model, files, issues });
      } else if (model) {
        const counts = [
          [model.namespaces.length, 'namespaces'],
          [model.pods.length, 'pods'],
          [model.services.length, 'services'],
          [model.endpointSlices.length, 'endpoint slices'],
          [model.networkPolicies.length, 'network policies'],
          [model.globalPolicies.length, 'global policies'],
          [model.prefilters.length, 'prefilters'],
        ].map(([n, what]) => `${n} ${what}`);
        process.stdout.write(`ok: ${files.length} file(s): ${counts.join(', ')}\n`);
      } else {
        process.stderr.write(issues.map(formatIssue).join('\n') + '\n');
        process.stderr.write(`${issues.length} problem(s) found\n`);
      }
      process.exitCode = model ? 0 : 1;
    });
}
