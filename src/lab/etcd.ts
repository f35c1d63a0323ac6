/**
 * One real etcd per lab (cluster mode: the datastore the agents watch), on loopback only, with
 * its data in the lab's state directory. It runs detached like the agents and is found again by
 * `--name sy-<lab>` on its command line, so a crashed `lab up` leaves nothing `lab down` misses.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, join, sep } from 'node:path';
import { argValue, findMarkedProcesses } from '../netns/processes.js';
import { logTail, stopProcesses } from './detached.js';
import { LabError } from './errors.js';
import { readFileIfExists, writeJsonAtomic } from './json-file.js';
import { STATE_ROOT } from './names.js';
import { isAlive, labDir } from './state.js';

export interface EtcdInfo {
  lab: string;
  pid: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  startedAt: string;
}

const ETCD_BINARY = 'etcd';
const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5000;

export function etcdDir(lab: string): string {
  return join(labDir(lab), 'etcd');
}

function dataDir(lab: string): string {
  return join(etcdDir(lab), 'data');
}

function logPath(lab: string): string {
  return join(etcdDir(lab), 'etcd.log');
}

function infoPath(lab: string): string {
  return join(etcdDir(lab), 'etcd.json');
}

/** The member name, and the marker that finds the process again. */
function memberName(lab: string): string {
  return `sy-${lab}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function readEtcdInfo(lab: string): EtcdInfo | undefined {
  const text = readFileIfExists(infoPath(lab));
  if (text === undefined) return undefined;
  try {
    const info = JSON.parse(text) as EtcdInfo;
    return info.lab === lab ? info : undefined;
  } catch {
    return undefined;
  }
}

function writeEtcdInfo(info: EtcdInfo): void {
  writeJsonAtomic(infoPath(info.lab), info);
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** The process is alive and is this lab's etcd (a recycled pid is not). */
function isLabEtcd(pid: number, lab: string): boolean {
  return isAlive(pid) && argValue(cmdline(pid), '--name') === memberName(lab);
}

export function etcdRunning(lab: string): boolean {
  const info = readEtcdInfo(lab);
  return info !== undefined && isLabEtcd(info.pid, lab);
}

/** Every lab etcd on the machine: `--name sy-<lab>` with its data below STATE_ROOT (never a system etcd). */
export function findEtcdProcesses(): { pid: number; lab: string }[] {
  return findMarkedProcesses('--name').flatMap(({ pid, argv }) => {
    const name = argValue(argv, '--name');
    const data = argValue(argv, '--data-dir');
    if (basename(argv[0] ?? '') !== ETCD_BINARY || !name.startsWith('sy-')) return [];
    if (!data.startsWith(`${STATE_ROOT}${sep}`) || !isAlive(pid)) return [];
    return [{ pid, lab: name.slice('sy-'.length) }];
  });
}

function labEtcdPids(lab: string): number[] {
  const pids = new Set(findEtcdProcesses().flatMap((p) => (p.lab === lab ? [p.pid] : [])));
  const info = readEtcdInfo(lab);
  if (info && isLabEtcd(info.pid, lab)) pids.add(info.pid);
  return [...pids];
}

/** Signals and waits until the processes are gone (SIGKILL after 5 s). */
async function signalAndWait(pids: number[], signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  const left = await stopProcesses(pids, signal, STOP_TIMEOUT_MS);
  if (left.length > 0) throw new LabError(`etcd (pid ${left.join(', ')}) did not exit after SIGKILL`);
}

/** Signals the lab's etcd and waits until it is gone (SIGKILL after 5 s). */
export async function killEtcd(lab: string, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
  await signalAndWait(labEtcdPids(lab), signal);
}

/** Stops the lab's etcd and keeps its data; returns the pids it stopped. */
export async function stopEtcd(lab: string): Promise<number[]> {
  const pids = labEtcdPids(lab);
  await signalAndWait(pids, 'SIGTERM');
  return pids;
}

/** Lab etcds whose lab directory is gone: what a crash can leave. */
export async function stopOrphanEtcd(): Promise<number[]> {
  const pids = findEtcdProcesses()
    .filter((p) => !existsSync(labDir(p.lab)))
    .map((p) => p.pid);
  await signalAndWait(pids, 'SIGKILL');
  return pids;
}

/** Free ports on loopback, distinct: all are bound at once before any is released. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, HOST, () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new LabError('cannot read a free port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: unknown };
    return res.ok && body.health === 'true';
  } catch {
    return false;
  }
}

/** Waits for `/health`; false on timeout or when the process exits first. */
async function waitHealthy(pid: number, clientUrl: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive(pid)) return false;
    if (await healthy(clientUrl)) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

/** The environment without ETCD_* variables: etcd 3.4 refuses to start when one shadows a flag. */
function etcdEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
}

/** etcd's command line: one member on loopback, sized for `switchyard apply`'s big transactions. */
function etcdArgs(name: string, data: string, clientUrl: string, peerUrl: string): string[] {
  return [
    '--name',
    name,
    '--data-dir',
    data,
    '--logger',
    'zap',
    // Agents ping every 5 s to notice a silent partition; etcd's default minimum is 5 s exactly.
    '--grpc-keepalive-min-time',
    '1s',
    // `switchyard apply` writes all its objects in one transaction: allow big ones (defaults:
    // 128 operations, 1.5 MiB).
    '--max-txn-ops',
    '100000',
    '--max-request-bytes',
    String(64 * 1024 * 1024),
    '--listen-client-urls',
    clientUrl,
    '--advertise-client-urls',
    clientUrl,
    '--listen-peer-urls',
    peerUrl,
    '--initial-advertise-peer-urls',
    peerUrl,
    '--initial-cluster',
    `${name}=${peerUrl}`,
    // Ignored when the data dir exists: a restart rejoins its own cluster.
    '--initial-cluster-state',
    'new',
  ];
}

/** The ports given, else those of the last run (its data dir remembers its peer URL), else free ones. */
async function choosePorts(
  opts: { clientPort?: number; peerPort?: number },
  previous: EtcdInfo | undefined,
): Promise<{ clientPort: number; peerPort: number }> {
  const portOf = (url: string | undefined): number | undefined =>
    url === undefined ? undefined : Number(new URL(url).port) || undefined;
  const clientPort = opts.clientPort ?? portOf(previous?.clientUrl);
  const peerPort = opts.peerPort ?? portOf(previous?.peerUrl);
  if (clientPort !== undefined && peerPort !== undefined) return { clientPort, peerPort };
  const [a, b] = (await freePorts(2)) as [number, number];
  const client = clientPort ?? a;
  return { clientPort: client, peerPort: peerPort ?? (b === client ? a : b) };
}

/** Starts etcd detached, its output appended to the lab's etcd.log; returns its pid. */
function spawnEtcd(lab: string, args: string[]): number {
  const log = openSync(logPath(lab), 'a');
  let pid: number | undefined;
  try {
    const child = spawn(ETCD_BINARY, args, { detached: true, stdio: ['ignore', log, log], env: etcdEnv() });
    // A missing binary shows as an 'error' event, not a throw.
    child.on('error', () => undefined);
    pid = child.pid;
    child.unref();
  } finally {
    closeSync(log);
  }
  if (pid === undefined)
    throw new LabError(`cannot start etcd ('${ETCD_BINARY}' not found? see scripts/setup.sh)`);
  return pid;
}

/** Waits until the new etcd is healthy; otherwise kills it and throws with the end of its log. */
async function awaitHealthyOrKill(lab: string, pid: number, clientUrl: string): Promise<void> {
  if (await waitHealthy(pid, clientUrl, START_TIMEOUT_MS)) return;
  const why = isAlive(pid)
    ? `did not become healthy at ${clientUrl} within ${START_TIMEOUT_MS / 1000} s (killed it)`
    : `exited before becoming healthy at ${clientUrl}`;
  await signalAndWait([pid], 'SIGKILL');
  const tail = logTail(logPath(lab));
  throw new LabError(`etcd of lab '${lab}' ${why}${tail ? `; the end of ${logPath(lab)}:\n${tail}` : ''}`);
}

/**
 * Starts the lab's etcd, or returns the one already running and healthy. Ports are those given,
 * else those of the last run (its data dir remembers its peer URL), else free ones.
 */
export async function startEtcd(
  lab: string,
  opts: { clientPort?: number; peerPort?: number } = {},
): Promise<EtcdInfo> {
  const previous = readEtcdInfo(lab);
  if (previous && isLabEtcd(previous.pid, lab)) {
    if (await waitHealthy(previous.pid, previous.clientUrl, START_TIMEOUT_MS)) return previous;
    await signalAndWait([previous.pid], 'SIGKILL');
    throw new LabError(`the etcd of lab '${lab}' (pid ${previous.pid}) did not become healthy; killed it`);
  }
  // One without a record (a run that died before writing etcd.json) would hold the ports and data.
  await signalAndWait(labEtcdPids(lab), 'SIGKILL');

  const { clientPort, peerPort } = await choosePorts(opts, previous);
  const clientUrl = `http://${HOST}:${clientPort}`;
  const peerUrl = `http://${HOST}:${peerPort}`;
  const data = dataDir(lab);
  mkdirSync(etcdDir(lab), { recursive: true });
  const pid = spawnEtcd(lab, etcdArgs(memberName(lab), data, clientUrl, peerUrl));
  await awaitHealthyOrKill(lab, pid, clientUrl);
  const info: EtcdInfo = { lab, pid, clientUrl, peerUrl, dataDir: data, startedAt: new Date().toISOString() };
  writeEtcdInfo(info);
  return info;
}

/** Starts the lab's etcd again on the ports and data dir of etcd.json. */
export async function restartEtcd(lab: string): Promise<EtcdInfo> {
  const info = readEtcdInfo(lab);
  if (!info) throw new LabError(`lab '${lab}' has no etcd to restart (no ${infoPath(lab)})`);
  return startEtcd(lab, {
    clientPort: Number(new URL(info.clientUrl).port),
    peerPort: Number(new URL(info.peerUrl).port),
  });
}
