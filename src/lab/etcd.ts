/**
 * A real etcd per lab (cluster mode: the datastore the agents watch): one member, or three for a
 * replicated store, on loopback only, with data in the lab's state directory. Clients
 * authenticate with a certificate (`--client-cert-auth`, keys in etcd-tls.ts) and members talk
 * to each other over TLS too. Members run detached like the agents and are found again by
 * `--name sy-<lab>[-N]` and a data dir in the lab's directory on their command line, so a
 * crashed `lab up` leaves nothing `lab down` misses.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { basename, join, relative, sep } from 'node:path';
import { EtcdStore, type EtcdTlsFiles } from '../datastore/etcd.js';
import { argValue, findMarkedProcesses } from '../netns/processes.js';
import { logTail, stopProcesses } from './detached.js';
import { ensureEtcdPki, pkiFiles, type EtcdPki } from './etcd-tls.js';
import { LabError } from './errors.js';
import { readFileIfExists, writeJsonAtomic } from './json-file.js';
import { STATE_ROOT, type EtcdMemberCount } from './names.js';
import { isAlive, labDir, privateLabDir } from './state.js';
import { openPrivateLog, privateDir } from '../util/private-files.js';

export type { EtcdMemberCount } from './names.js';

export interface EtcdMember {
  /** `sy-<lab>` (one member) or `sy-<lab>-<n>`: etcd's member name, and the process's marker. */
  name: string;
  pid: number;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
}

export interface EtcdInfo {
  lab: string;
  /** Every member's client URL, comma-separated: what the CLI and the agents are given. */
  clientUrl: string;
  members: EtcdMember[];
  /** The client certificate root's CLI and the agents present (https). */
  tls: EtcdTlsFiles;
  startedAt: string;
}

const ETCD_BINARY = 'etcd';
const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5000;
/** How long `stopEtcd` lets members shut down by themselves. */
const STOP_GRACE_MS = 1000;

export function etcdDir(lab: string): string {
  return join(labDir(lab), 'etcd');
}

/** Keys and certificates: 0700, files 0600 (see etcd-tls.ts). */
export function etcdPkiDir(lab: string): string {
  return join(etcdDir(lab), 'pki');
}

/** The client certificate of the lab's etcd: what root's CLI and the agents present. */
export function labEtcdTls(lab: string): EtcdTlsFiles {
  return pkiFiles(etcdPkiDir(lab)).client;
}

/** One member keeps the layout of labs from before members (etcd/data, etcd/etcd.log). */
function memberDir(lab: string, index: number, count: number): string {
  return count === 1 ? etcdDir(lab) : join(etcdDir(lab), `member-${index + 1}`);
}

function memberName(lab: string, index: number, count: number): string {
  return count === 1 ? `sy-${lab}` : `sy-${lab}-${index + 1}`;
}

function logPath(member: { dataDir: string }): string {
  return join(member.dataDir, '..', 'etcd.log');
}

function infoPath(lab: string): string {
  return join(etcdDir(lab), 'etcd.json');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function readEtcdInfo(lab: string): EtcdInfo | undefined {
  const text = readFileIfExists(infoPath(lab));
  if (text === undefined) return undefined;
  try {
    const info = JSON.parse(text) as EtcdInfo;
    return info.lab === lab && Array.isArray(info.members) && info.tls !== undefined ? info : undefined;
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

/**
 * The lab an etcd command line belongs to: `--name sy-…` and a data dir below STATE_ROOT (never
 * a system etcd); the lab is the data dir's first component there.
 */
function etcdLab(argv: readonly string[]): string | undefined {
  if (basename(argv[0] ?? '') !== ETCD_BINARY || !argValue(argv, '--name').startsWith('sy-'))
    return undefined;
  const data = argValue(argv, '--data-dir');
  if (!data.startsWith(`${STATE_ROOT}${sep}`)) return undefined;
  return relative(STATE_ROOT, data).split(sep)[0];
}

/** The process is alive and is this member of this lab (a recycled pid is not). */
export function isMember(member: EtcdMember, lab: string): boolean {
  const argv = cmdline(member.pid);
  return isAlive(member.pid) && etcdLab(argv) === lab && argValue(argv, '--name') === member.name;
}

/** Every member of the lab's etcd is running. */
export function etcdRunning(lab: string): boolean {
  const info = readEtcdInfo(lab);
  return info !== undefined && info.members.every((m) => isMember(m, lab));
}

/** Every lab etcd member on the machine (never a system etcd). */
export function findEtcdProcesses(): { pid: number; lab: string }[] {
  return findMarkedProcesses('--name').flatMap(({ pid, argv }) => {
    const lab = etcdLab(argv);
    return lab !== undefined && isAlive(pid) ? [{ pid, lab }] : [];
  });
}

function labEtcdPids(lab: string): number[] {
  const pids = new Set(findEtcdProcesses().flatMap((p) => (p.lab === lab ? [p.pid] : [])));
  for (const m of readEtcdInfo(lab)?.members ?? []) if (isMember(m, lab)) pids.add(m.pid);
  return [...pids];
}

/** Signals and waits until the processes are gone (SIGKILL after `graceMs`). */
async function signalAndWait(
  pids: number[],
  signal: 'SIGTERM' | 'SIGKILL',
  graceMs = STOP_TIMEOUT_MS,
): Promise<void> {
  const left = await stopProcesses(pids, signal, graceMs);
  if (left.length > 0) throw new LabError(`etcd (pid ${left.join(', ')}) did not exit after SIGKILL`);
}

/** Signals the lab's etcd and waits until it is gone (SIGKILL after 5 s). */
export async function killEtcd(lab: string, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
  await signalAndWait(labEtcdPids(lab), signal);
}

/**
 * Stops the lab's etcd and keeps its data; returns the pids it stopped. Members stopped together
 * each wait for a leadership transfer that cannot happen (5 s on the test machine), so the rest
 * are SIGKILLed after a short grace: etcd has fsynced every write it acknowledged.
 */
export async function stopEtcd(lab: string): Promise<number[]> {
  const pids = labEtcdPids(lab);
  await signalAndWait(pids, 'SIGTERM', STOP_GRACE_MS);
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

/** `/health` of one member over TLS with the client certificate (true once there is a leader). */
function healthy(clientUrl: string, tls: EtcdTlsFiles): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      `${clientUrl}/health`,
      {
        ca: readFileSync(tls.ca),
        cert: readFileSync(tls.cert),
        key: readFileSync(tls.key),
        timeout: 1000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: unknown }).health === 'true');
          } catch {
            resolve(false);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Waits for `/health`; false on timeout or when the process exits first. */
async function waitHealthy(member: EtcdMember, tls: EtcdTlsFiles, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive(member.pid)) return false;
    if (await healthy(member.clientUrl, tls)) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

/** The environment without ETCD_* variables: etcd 3.4 refuses to start when one shadows a flag. */
function etcdEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
}

/**
 * One member's command line: loopback only, TLS with client certificates on both ports, sized
 * for `switchyard apply`'s big transactions.
 */
function etcdArgs(lab: string, member: EtcdMember, all: readonly EtcdMember[], pki: EtcdPki): string[] {
  return [
    '--name',
    member.name,
    '--data-dir',
    member.dataDir,
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
    member.clientUrl,
    '--advertise-client-urls',
    member.clientUrl,
    '--listen-peer-urls',
    member.peerUrl,
    '--initial-advertise-peer-urls',
    member.peerUrl,
    '--initial-cluster',
    all.map((m) => `${m.name}=${m.peerUrl}`).join(','),
    '--initial-cluster-token',
    `sy-${lab}`,
    // Ignored when the data dir exists: a restart rejoins its own cluster.
    '--initial-cluster-state',
    'new',
    // Only holders of a certificate from the lab's CA may read or write (loopback is no access
    // control on a shared host), and only members may join: both ports require one.
    '--cert-file',
    pki.member.cert,
    '--key-file',
    pki.member.key,
    '--trusted-ca-file',
    pki.member.ca,
    '--client-cert-auth',
    '--peer-cert-file',
    pki.member.cert,
    '--peer-key-file',
    pki.member.key,
    '--peer-trusted-ca-file',
    pki.member.ca,
    '--peer-client-cert-auth',
  ];
}

/** The members of the last run (their data dirs remember their peer URLs), else new ones on free ports. */
async function planMembers(
  lab: string,
  count: number,
  previous: EtcdInfo | undefined,
): Promise<EtcdMember[]> {
  if (previous) return previous.members;
  const ports = await freePorts(2 * count);
  return Array.from({ length: count }, (_, i) => ({
    name: memberName(lab, i, count),
    pid: 0,
    clientUrl: `https://${HOST}:${ports[2 * i]}`,
    peerUrl: `https://${HOST}:${ports[2 * i + 1]}`,
    dataDir: join(memberDir(lab, i, count), 'data'),
  }));
}

/** Starts one member detached, its output appended to its etcd.log; returns its pid. */
function spawnMember(args: string[], member: EtcdMember): number {
  privateDir(join(member.dataDir, '..'));
  const log = openPrivateLog(logPath(member));
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

/** Waits until the members are healthy; otherwise kills `started` and throws with the end of a log. */
async function awaitHealthyOrKill(
  lab: string,
  members: readonly EtcdMember[],
  started: readonly number[],
  tls: EtcdTlsFiles,
): Promise<void> {
  const results = await Promise.all(members.map((m) => waitHealthy(m, tls, START_TIMEOUT_MS)));
  const failed = members.find((_, i) => !results[i]);
  if (!failed) return;
  const why = isAlive(failed.pid)
    ? `did not become healthy at ${failed.clientUrl} within ${START_TIMEOUT_MS / 1000} s (killed it)`
    : `exited before becoming healthy at ${failed.clientUrl}`;
  await signalAndWait([...started], 'SIGKILL');
  const log = logPath(failed);
  const tail = logTail(log);
  throw new LabError(
    `etcd member ${failed.name} of lab '${lab}' ${why}${tail ? `; the end of ${log}:\n${tail}` : ''}`,
  );
}

/**
 * Starts the lab's etcd (`members`: 1 or 3, default the running one's or 1), or returns the one
 * already running and healthy. Members that died are started again on their ports and data;
 * keys and certificates are made on the first start (etcd-tls.ts).
 */
export async function startEtcd(lab: string, opts: { members?: EtcdMemberCount } = {}): Promise<EtcdInfo> {
  const previous = readEtcdInfo(lab);
  const count = opts.members ?? previous?.members.length ?? 1;
  if (previous && previous.members.length !== count)
    throw new LabError(
      `the etcd of lab '${lab}' has ${previous.members.length} member(s), not ${count}: ` +
        `'switchyard cluster down --name ${lab}' first to change that`,
    );
  privateLabDir(lab);
  privateDir(etcdDir(lab));
  const pki = ensureEtcdPki(etcdPkiDir(lab), lab);
  const members = await planMembers(lab, count, previous);
  const running = members.filter((m) => m.pid > 0 && isMember(m, lab));
  // Members without a record (a run that died before writing etcd.json) would hold ports and data.
  const strays = labEtcdPids(lab).filter((pid) => !running.some((m) => m.pid === pid));
  await signalAndWait(strays, 'SIGKILL');

  const started: number[] = [];
  const next = members.map((m) => {
    if (running.includes(m)) return m;
    const pid = spawnMember(etcdArgs(lab, m, members, pki), m);
    started.push(pid);
    return { ...m, pid };
  });
  await awaitHealthyOrKill(lab, next, started, pki.client);
  if (started.length === 0 && previous) return previous;
  const info: EtcdInfo = {
    lab,
    clientUrl: next.map((m) => m.clientUrl).join(','),
    members: next,
    tls: pki.client,
    startedAt: new Date().toISOString(),
  };
  writeEtcdInfo(info);
  return info;
}

/** Starts the lab's etcd again (the members that are not running) on the ports and data of etcd.json. */
export async function restartEtcd(lab: string): Promise<EtcdInfo> {
  if (!readEtcdInfo(lab)) throw new LabError(`lab '${lab}' has no etcd to restart (no ${infoPath(lab)})`);
  return startEtcd(lab);
}

/** SIGKILLs one member (a crash of one machine of a replicated etcd). */
export async function killEtcdMember(lab: string, name: string): Promise<EtcdMember> {
  const member = readEtcdInfo(lab)?.members.find((m) => m.name === name);
  if (!member) throw new LabError(`lab '${lab}' has no etcd member '${name}'`);
  if (isMember(member, lab)) await signalAndWait([member.pid], 'SIGKILL');
  return member;
}

/** The member that is the Raft leader now, asked of the running members. */
export async function etcdLeader(lab: string): Promise<EtcdMember> {
  const info = readEtcdInfo(lab);
  if (!info) throw new LabError(`lab '${lab}' has no etcd`);
  const answers = await Promise.all(
    info.members
      .filter((m) => isMember(m, lab))
      .map(async (m) => {
        const store = new EtcdStore(m.clientUrl, info.tls);
        try {
          return { member: m, status: await store.memberStatus() };
        } catch {
          return undefined;
        } finally {
          store.close();
        }
      }),
  );
  const found = answers.find((a) => a !== undefined && a.status.memberId === a.status.leaderId);
  if (!found) throw new LabError(`the etcd of lab '${lab}' has no leader now`);
  return found.member;
}
