import { CommandError } from './errors.js';
import { runCommand } from './run.js';
import { requireTool } from './tools.js';

export interface IpBatchOptions {
  /** Network namespace the whole batch runs in (`ip -n`); the root namespace is never a target. */
  netns?: string;
  /** Keep going after a failing line (for removals of things that may already be gone). */
  force?: boolean;
}

/**
 * Runs many `ip` commands in one process (`ip -batch -`), so bulk setup costs one fork per
 * namespace instead of one per command. A failure names the line that failed and the kernel's
 * answer; with `force` failures are ignored and returned.
 */
export async function ipBatch(lines: readonly string[], opts: IpBatchOptions = {}): Promise<string[]> {
  if (lines.length === 0) return [];
  for (const l of lines)
    if (l.includes('\n')) throw new Error(`ip batch line contains a newline: ${JSON.stringify(l)}`);
  const args = [...(opts.netns ? ['-n', opts.netns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  const r = await runCommand(requireTool('ip'), args, lines.join('\n') + '\n');
  if (r.code === 0) return [];
  const problems = describeFailures(r.stderr, lines);
  if (opts.force) return problems;
  const where = opts.netns ? ` in ${opts.netns}` : '';
  throw new CommandError(
    `ip batch${where} failed: ${problems.join('; ') || r.stderr.trim()}`,
    r.stderr,
    r.code,
  );
}

/** `ip` prints the kernel's complaint, then `Command failed -:N`; pair each with its line. */
export function describeFailures(stderr: string, lines: readonly string[]): string[] {
  const out: string[] = [];
  let pending: string[] = [];
  for (const raw of stderr.split('\n')) {
    const text = raw.trim();
    if (text === '') continue;
    const m = /^Command failed -:(\d+)$/.exec(text);
    if (m) {
      const line = lines[Number(m[1]) - 1] ?? '?';
      out.push(`'${line}': ${pending.join(' ') || 'failed'}`);
      pending = [];
    } else pending.push(text);
  }
  if (pending.length > 0) out.push(pending.join(' '));
  return out;
}
