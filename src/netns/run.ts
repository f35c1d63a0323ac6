import { spawn } from 'node:child_process';
import { CommandError } from './errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

/** Runs a program to completion, feeding `input` on stdin; never throws for a non-zero exit. */
export function runCommand(file: string, args: readonly string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        code,
      }),
    );
    // EPIPE when the program exits before reading everything is reported through 'close'.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** Like runCommand, but a non-zero exit becomes a CommandError carrying stderr. */
export async function runChecked(file: string, args: readonly string[], input?: string): Promise<RunResult> {
  const r = await runCommand(file, args, input);
  if (r.code !== 0) {
    const detail = r.stderr.trim() || r.stdout.trim();
    throw new CommandError(
      `${[file, ...args].join(' ')} failed${detail ? `: ${detail}` : ''}`,
      r.stderr,
      r.code,
    );
  }
  return r;
}
