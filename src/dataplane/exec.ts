/**
 * Runs the standard netfilter tools (iptables-restore, ipset, nft) inside a node's network
 * namespace. Refuses an empty namespace name: that would mean the root namespace, which we never touch.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

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

/** Runs `cmd args…` in `netns`, feeding `input` on stdin. Resolves with the result; never throws on exit code. */
export function runInNetns(
  netns: string,
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<ToolResult> {
  if (!netns || !netns.startsWith('sy-')) {
    return Promise.reject(new Error(`refusing to run ${cmd} outside a project namespace (got '${netns}')`));
  }
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? new Error('`ip` not found: install the iproute2 package') : e),
    );
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString();
      if (code !== 0 && /exec of ".*" failed: No such file/.test(stderr)) {
        return reject(
          new Error(
            `${cmd} not found: install the ${APT_PACKAGE[cmd] ?? cmd} package (apt-get install ${APT_PACKAGE[cmd] ?? cmd})`,
          ),
        );
      }
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
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
