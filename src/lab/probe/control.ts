/** The CLI's side of the probe server: config, start, reload, find and stop. */
import { spawn } from 'node:child_process';
import { closeSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { argValue, findMarkedProcesses } from '../../netns/processes.js';
import { logTail } from '../detached.js';
import { LabError } from '../errors.js';
import { isAlive, type ProbeServerInfo } from '../state.js';
import type { Topology } from '../topology.js';
import {
  controlSocketPath,
  probeConfigPath,
  probeLogPath,
  SERVER_MARK,
  type ControlRequest,
  type ControlResponse,
  type ProbeServerConfig,
} from './protocol.js';
import { probeScript } from './scripts.js';
import { openPrivateLog, writePrivateFileAtomic } from '../../util/private-files.js';

const START_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;

export function writeProbeConfig(
  labDir: string,
  lab: string,
  cgroupRoot: string,
  pods: Topology['pods'],
): void {
  const config: ProbeServerConfig = {
    lab,
    pods: pods.map((p) => ({ id: p.id, netns: p.netns, cgroup: join(cgroupRoot, p.slug), ports: p.ports })),
  };
  writePrivateFileAtomic(probeConfigPath(labDir), JSON.stringify(config) + '\n');
}

export function controlRequest(
  labDir: string,
  req: ControlRequest,
  timeoutMs = REQUEST_TIMEOUT_MS,
): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(controlSocketPath(labDir));
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`probe server did not answer '${req.op}' within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: Buffer) => (buf += d.toString('utf8')));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlResponse);
      } catch {
        reject(new Error(`probe server sent an unreadable answer: ${buf}`));
      }
    });
  });
}

/** Whether `pid` is the probe server of `lab` (not some process that inherited the pid). */
export function isProbeServer(pid: number, lab: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('--lab');
    return argv.includes(SERVER_MARK) && i >= 0 && argv[i + 1] === lab;
  } catch {
    return false;
  }
}

/** Probe server processes on the machine, by their command line: `lab` → pids. */
export function findProbeServers(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const { pid, argv } of findMarkedProcesses(SERVER_MARK)) {
    const lab = argValue(argv, '--lab');
    if (lab) out.set(lab, [...(out.get(lab) ?? []), pid]);
  }
  return out;
}

async function startServer(labDir: string, lab: string): Promise<ProbeServerInfo> {
  const log = openPrivateLog(probeLogPath(labDir));
  const child = spawn(process.execPath, [probeScript('server'), SERVER_MARK, '--lab', lab, '--dir', labDir], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const pid = child.pid;
  if (pid === undefined) throw new LabError('cannot start the probe server');
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const r = await controlRequest(labDir, { op: 'ping' }, 1000);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (!isAlive(pid) || Date.now() > deadline) {
      stopProcess(pid);
      const tail = logTail(probeLogPath(labDir));
      throw new LabError(`the probe server did not start${tail ? `:\n${tail}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { pid, socket: controlSocketPath(labDir), startedAt: new Date().toISOString() };
}

export interface SyncedProbeServer {
  info: ProbeServerInfo;
  /** Pods whose probe sockets are open (`namespace/name`): ready to back services. */
  serving: Set<string>;
}

/**
 * Makes the probe server serve exactly the config on disk: starts it when it is not running,
 * then reloads. Per-pod failures are reported as errors.
 */
export async function syncProbeServer(
  labDir: string,
  lab: string,
  current: ProbeServerInfo | undefined,
): Promise<SyncedProbeServer> {
  const running = current && isAlive(current.pid) && isProbeServer(current.pid, lab) ? current : undefined;
  const info = running ?? (await startServer(labDir, lab));
  const r = await controlRequest(labDir, { op: 'reload' });
  if (!r.ok) throw new LabError(`probe server: ${r.error ?? (r.errors ?? []).join('; ')}`);
  return { info, serving: new Set(r.serving ?? []) };
}

/** Drops sockets of pods about to go, so their namespaces can actually be freed. */
export async function reloadIfRunning(
  labDir: string,
  lab: string,
  current: ProbeServerInfo | undefined,
): Promise<void> {
  if (!current || !isAlive(current.pid) || !isProbeServer(current.pid, lab)) return;
  await controlRequest(labDir, { op: 'reload' });
}

export function stopProcess(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}
