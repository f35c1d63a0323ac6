/**
 * The processes a lab starts detached (probe server, agents, etcd): stopping them, and reading
 * the end of their logs for an error message when they did not come up.
 */
import { readFileSync } from 'node:fs';
import { isAlive } from './state.js';

const STOP_TIMEOUT_MS = 5000;

function send(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone already
  }
}

async function waitGone(pids: readonly number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Sends `signal`, waits up to `timeoutMs` for the processes to exit, SIGKILLs the rest and waits
 * again. Returns the pids still alive after that (none, unless the kernel is stuck).
 */
export async function stopProcesses(
  pids: readonly number[],
  signal: NodeJS.Signals,
  timeoutMs = STOP_TIMEOUT_MS,
): Promise<number[]> {
  for (const pid of pids) send(pid, signal);
  await waitGone(pids, timeoutMs);
  const stubborn = pids.filter(isAlive);
  if (stubborn.length === 0) return [];
  for (const pid of stubborn) send(pid, 'SIGKILL');
  await waitGone(stubborn, timeoutMs);
  return stubborn.filter(isAlive);
}

/** The last `lines` lines of a log file ('' when there is none). */
export function logTail(path: string, lines = 10): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
