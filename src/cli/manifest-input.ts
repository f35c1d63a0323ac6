/**
 * Where a manifest command reads from, kubectl style: positional paths, `-f FILE|DIR` (repeatable)
 * and `-f -` for standard input. Standard input is copied to a private temporary file, so every
 * reader below takes paths as it always did; messages name it `<stdin>`, never the temporary path.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { INPUT_LIMITS } from '../model/limits.js';
import { CliError } from './output.js';

export const STDIN_NAME = '<stdin>';

let stdinCopy: string | undefined;

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** `-f, --filename <path>`: repeatable; `-` reads standard input. */
export function addFilenameOption(cmd: Command): Command {
  return cmd.option(
    '-f, --filename <path>',
    'manifest file or directory; - reads standard input (repeatable; adds to the paths given)',
    collect,
  );
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > INPUT_LIMITS.fileBytes)
      throw new CliError(`${STDIN_NAME}: more than the limit of ${INPUT_LIMITS.fileBytes} bytes`, 1, {
        code: 'input-too-large',
      });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Standard input as a file (read once per process, removed when the process exits). */
async function stdinFile(): Promise<string> {
  if (stdinCopy) return stdinCopy;
  if (process.stdin.isTTY === true)
    throw new CliError('-f - reads manifests from standard input, but it is a terminal', 2, {
      code: 'usage',
    });
  const text = await readStdin();
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-stdin-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'stdin.yaml');
  writeFileSync(file, text, { mode: 0o600 });
  stdinCopy = file;
  return file;
}

/** Every path asked for, positional first; at least one. */
export async function manifestPaths(
  positional: readonly string[] | undefined,
  filenames: readonly string[] | undefined,
): Promise<string[]> {
  const asked = [...(positional ?? []), ...(filenames ?? [])];
  if (asked.length === 0)
    throw new CliError(
      'no manifests given: name files or directories, or -f FILE|DIR, or -f - for stdin',
      2,
      {
        code: 'missing-argument',
      },
    );
  const out: string[] = [];
  for (const p of asked) out.push(p === '-' ? await stdinFile() : p);
  return out;
}

/** A path or message as the user should read it: the stdin copy named `<stdin>`. */
export function displayPaths(text: string): string {
  return stdinCopy ? text.split(stdinCopy).join(STDIN_NAME) : text;
}
