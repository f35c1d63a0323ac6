/**
 * How the CLI ends with an error (docs/cli.md): usage errors exit 2, failures 1. With `--json`
 * the error is one JSON object on stdout, `{"error":{"code","message","exitCode",…}}`, so a
 * script reads one document whether the command worked or not; otherwise a line on stderr.
 */
import { CommanderError } from 'commander';
import { displayPaths } from './manifest-input.js';
import { CliError } from './output.js';
import { errorMessage } from '../util/errors.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface ErrorReport {
  code: string;
  message: string;
  exitCode: number;
  [detail: string]: unknown;
}

/** Commander's codes (`commander.unknownOption`) as this CLI's (`unknown-option`). */
function commanderCode(code: string): string {
  const name = code.replace(/^commander\./, '');
  if (name === 'error' || name === 'help') return 'usage';
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Error classes of the layers below, by the stable code they report as. */
const CODES_BY_CLASS: Readonly<Record<string, string>> = {
  LabError: 'lab',
  ManifestError: 'invalid-manifests',
  PrerequisiteError: 'prerequisite',
  DatastoreError: 'datastore',
  ApplyError: 'apply',
  AgentLaunchError: 'agent',
};

/** What an error says to a user; undefined for commander's help and version (exit 0). */
export function errorReport(err: unknown): ErrorReport | undefined {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) return undefined;
    const message = err.message.replace(/^error: /, '');
    return { code: commanderCode(err.code), message, exitCode: EXIT_USAGE };
  }
  if (err instanceof CliError)
    return { ...err.details, code: err.code, message: displayPaths(err.message), exitCode: err.exitCode };
  const name = err instanceof Error ? err.name : '';
  return {
    code: CODES_BY_CLASS[name] ?? 'failed',
    message: displayPaths(errorMessage(err)),
    exitCode: EXIT_FAILURE,
  };
}

/** `--json` anywhere before `--` (or `-o json`): errors, too, are printed as JSON. */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  const args = end === -1 ? argv : argv.slice(0, end);
  return args.some(
    (a, i) =>
      a === '--json' ||
      a.startsWith('--json=') ||
      a === '-ojson' ||
      a === '--output=json' ||
      ((a === '-o' || a === '--output') && args[i + 1] === 'json'),
  );
}

/** Prints the error as the contract says; returns the exit code. */
export function reportError(err: unknown, json: boolean, commanderPrinted = false): number {
  const report = errorReport(err);
  if (!report) return 0;
  if (json) process.stdout.write(`${JSON.stringify({ error: report })}\n`);
  else if (!commanderPrinted) {
    process.stderr.write(`switchyard: ${report.message}\n`);
    if (process.env.SWITCHYARD_DEBUG && err instanceof Error && !(err instanceof CliError))
      process.stderr.write(`${err.stack ?? ''}\n`);
  }
  return report.exitCode;
}
