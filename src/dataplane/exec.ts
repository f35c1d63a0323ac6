/**
 * Runs the standard netfilter tools (iptables-restore, ipset, nft) inside a node's network
 * namespace. Refuses an empty namespace name: that would mean the root namespace, which we never touch.
 *
 * The tool is spawned from inside the namespace (setns of the calling thread around the fork, see
 * withNetns) rather than through `ip netns exec`: that one execs `ip`, unshares a mount namespace
 * and remounts /sys before it execs the tool, 10–60 ms per call on a busy node, and an apply makes
 * two to four calls. The tools need nothing of that: only the network namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { StringDecoder } from 'node:string_decoder';
import { withNetns } from '../netns/setns.js';

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class ToolError extends Error {
  constructor(
    readonly tool: string,
    readonly result: ToolResult,
  ) {
    super(`${tool} failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`);
    this.name = 'ToolError';
  }
}

const APT_PACKAGE: Record<string, string> = {
  'iptables-restore': 'iptables',
  'iptables-save': 'iptables',
  'iptables-legacy-restore': 'iptables',
  'iptables-legacy-save': 'iptables',
  iptables: 'iptables',
  ipset: 'ipset',
  nft: 'nftables',
  conntrack: 'conntrack',
  ip: 'iproute2',
};

/**
 * SWITCHYARD_TRACE_EXEC=1 (stderr) or =FILE (appended): every tool call with its namespace,
 * command, milliseconds and exit code, to see where an apply's time goes (docs/benchmarks.md).
 * SWITCHYARD_TRACE_EXEC_INPUT=1 as well: with the script each call was fed (up to 64 KiB of it).
 */
const TRACE = process.env.SWITCHYARD_TRACE_EXEC;
const TRACE_INPUT = TRACE && process.env.SWITCHYARD_TRACE_EXEC_INPUT === '1';
const TRACE_INPUT_MAX = 64 * 1024;

function tracedInput(input: string | undefined): string {
  if (!TRACE_INPUT || !input) return '';
  const cut = input.length > TRACE_INPUT_MAX;
  return `${input.slice(0, TRACE_INPUT_MAX)}${cut ? `\n… (${input.length} characters)\n` : ''}`;
}

function trace(line: string): void {
  if (TRACE === '1') process.stderr.write(line);
  else if (TRACE) appendFileSync(TRACE, line);
}

/** The child forks while this thread is inside `netns`, so the tool starts there; nothing else does. */
function spawnInNetns(netns: string, cmd: string, args: readonly string[]): ChildProcess {
  return withNetns(netns, () => spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
}

/** Runs `cmd args…` in `netns`, feeding `input` on stdin. Resolves with the result; never throws on exit code. */
export async function runInNetns(
  netns: string,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<ToolResult> {
  const out: Buffer[] = [];
  const r = await streamInNetns(netns, cmd, args, (chunk) => out.push(chunk), input);
  return { code: r.code, stdout: Buffer.concat(out).toString(), stderr: r.stderr };
}

/**
 * Like runInNetns, but hands stdout to `onStdout` chunk by chunk as the tool writes it, not kept:
 * for a reader of a large listing (`nft -j list table` is 11–13 MB at 10k services) that needs
 * only part of it, so the agent never holds the whole text (and its copies) at once. An error
 * `onStdout` throws rejects the call (the tool is killed).
 */
export function streamInNetns(
  netns: string,
  cmd: string,
  args: readonly string[],
  onStdout: (chunk: Buffer) => void,
  input?: string,
): Promise<Omit<ToolResult, 'stdout'>> {
  if (!netns || !netns.startsWith('sy-')) {
    return Promise.reject(new Error(`refusing to run ${cmd} outside a project namespace (got '${netns}')`));
  }
  // As `ip netns exec` answered a missing namespace: callers treat "No such file" as gone.
  if (!existsSync(join('/run/netns', netns)))
    return Promise.resolve({
      code: 255,
      stderr: `Cannot open network namespace "${netns}": No such file or directory\n`,
    });
  const started = performance.now();
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawnInNetns(netns, cmd, args);
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const err: Buffer[] = [];
    let failed: unknown;
    child.stdout?.on('data', (d: Buffer) => {
      if (failed !== undefined) return;
      try {
        onStdout(d);
      } catch (e) {
        failed = e;
        child.kill('SIGKILL');
      }
    });
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT'
          ? new Error(
              `${cmd} not found: install the ${APT_PACKAGE[cmd] ?? cmd} package (apt-get install ${APT_PACKAGE[cmd] ?? cmd})`,
            )
          : e,
      ),
    );
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString();
      if (TRACE)
        trace(
          `exec ${netns} ${cmd} ${args.join(' ')}: ${(performance.now() - started).toFixed(1)} ms, exit ${code ?? -1}\n` +
            tracedInput(input),
        );
      if (failed !== undefined) reject(failed instanceof Error ? failed : new Error(String(failed)));
      else resolve({ code: code ?? -1, stderr });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** Like runInNetns, but throws ToolError on a non-zero exit. */
export async function runInNetnsOrThrow(
  netns: string,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<ToolResult> {
  const r = await runInNetns(netns, cmd, args, input);
  if (r.code !== 0) throw new ToolError(cmd, r);
  return r;
}

/**
 * Runs `cmd args…` in `netns` and hands its output to `onLine` line by line (without the newline)
 * as the tool writes it; throws ToolError on a non-zero exit. For readers of a whole ruleset
 * (`iptables-save -c` is 17 MB at 10k services) that need a part of each line: the text, its
 * copies and its lines as one array are never held at once.
 */
export async function readLinesInNetns(
  netns: string,
  cmd: string,
  args: readonly string[],
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  const take = (text: string): string => {
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      onLine(text.slice(start, nl));
      start = nl + 1;
    }
    return text.slice(start);
  };
  const r = await streamInNetns(netns, cmd, args, (chunk) => {
    rest = take(rest + decoder.write(chunk));
  });
  if (r.code !== 0) throw new ToolError(cmd, { ...r, stdout: '' });
  const last = rest + decoder.end();
  if (last) onLine(last);
}

/** The rendered script's line `n` (1-based) with two lines of context, for apply errors. */
export function scriptContext(script: string, line: number): string {
  const lines = script.split('\n');
  const from = Math.max(1, line - 2);
  const to = Math.min(lines.length, line + 2);
  const out: string[] = [];
  for (let i = from; i <= to; i++)
    out.push(`${i === line ? '>' : ' '} ${String(i).padStart(5)} | ${lines[i - 1] ?? ''}`);
  return out.join('\n');
}

/** The tools among `names` that are not on PATH, each with the Debian package that brings it. */
export function missingTools(names: readonly string[]): string[] {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter(Boolean);
  return names
    .filter((name) => !dirs.some((d) => existsSync(join(d, name))))
    .map((name) => `this machine lacks ${name} (apt-get install ${APT_PACKAGE[name] ?? name})`);
}
