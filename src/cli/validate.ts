import type { Command } from 'commander';
import { formatIssue, validateManifests } from '../model/index.js';
import { addFilenameOption, displayPaths, manifestPaths } from './manifest-input.js';
import { printJson } from './output.js';

export function register(program: Command): void {
  addFilenameOption(
    program
      .command('validate')
      .description('check manifests; print every problem as file:line: Kind ns/name: field: message')
      .argument('[paths...]', 'YAML files or directories (searched recursively); - reads standard input'),
  )
    .option('--json', 'machine-readable result')
    .action(async (positional: string[], opts: { json?: boolean; filename?: string[] }) => {
      const paths = await manifestPaths(positional, opts.filename);
      const { model, issues: found, files: read } = validateManifests(paths);
      const issues = found.map((i) => ({ ...i, file: displayPaths(i.file) }));
      const files = read.map(displayPaths);
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
