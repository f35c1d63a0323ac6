/**
 * Helpers for the lab kernel tests: run the real CLI (as a user would), write manifests, and look
 * at what a lab left in the kernel.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toYaml, type Manifest } from '../support/manifests.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(REPO, 'bin', 'switchyard');
export const XYZ = join(REPO, 'examples', 'xyz', 'model.yaml');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function startCli(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env },
  });
}

export function cli(args: readonly string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = startCli(args);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs the CLI and fails with its stderr when it does not exit 0. */
export async function cliOk(args: readonly string[]): Promise<string> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`switchyard ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function manifestFile(manifests: readonly Manifest[], name = 'lab.yaml'): string {
  const dir = mkdtempSync(join(tmpdir(), 'sy-lab-test-'));
  const file = join(dir, name);
  writeFileSync(file, toYaml(manifests));
  return file;
}

export function netnsOf(lab: string): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith(`sy-${lab}-`));
  } catch {
    return [];
  }
}

/** The namespace's identity: the same inode means the same namespace, not one recreated. */
export function netnsInode(name: string): number {
  return statSync(join('/run/netns', name)).ino;
}

export function cgroup2(): string {
  const line = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[2] === 'cgroup2');
  return line?.split(' ')[1] ?? '/sys/fs/cgroup';
}

export function probeServerPids(lab: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv.includes('--switchyard-probe-server') && argv[argv.indexOf('--lab') + 1] === lab;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Everything of `lab` still on the machine; all empty/false once it is gone. */
export function leftovers(lab: string): {
  netns: string[];
  cgroups: boolean;
  state: boolean;
  pins: boolean;
  probes: number[];
} {
  return {
    netns: netnsOf(lab),
    cgroups: existsSync(join(cgroup2(), 'switchyard', lab)),
    state: existsSync(join('/run/switchyard/labs', lab)),
    pins: existsSync(join('/sys/fs/bpf/switchyard', lab)),
    probes: probeServerPids(lab),
  };
}

export const NOTHING_LEFT = { netns: [], cgroups: false, state: false, pins: false, probes: [] };

/** The root namespace's links, addresses, routes and forwarding switch: must never change. */
export async function rootNetworkSnapshot(): Promise<string> {
  const run = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      const c = spawn('ip', args, { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('error', reject);
      c.on('close', () => resolve(out));
    });
  const links = (await run(['-o', 'link', 'show']))
    .split('\n')
    .map((l) => l.split(':')[1]?.trim() ?? '')
    .filter(Boolean)
    .sort();
  return JSON.stringify({
    links,
    addrs: await run(['-o', 'addr', 'show']),
    routes: await run(['route', 'show', 'table', 'all']),
    forward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8'),
  });
}

export type Matrix = Record<string, Record<string, boolean>>;

export function allTrue(m: Matrix): boolean {
  return Object.values(m).every((row) => Object.values(row).every(Boolean));
}
