/**
 * How often a lab agent was restarted by its supervisor (src/lab/supervisor.ts): the supervisor
 * writes the record in the agent's state directory before each restart, the agent reads it when
 * it starts and reports it in its status and metrics.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFileAtomic } from '../util/private-files.js';

export interface RestartRecord {
  restarts: number;
  /** The last exit that led to a restart: when, and its code (-1: killed by a signal). */
  lastExit?: { at: string; code: number };
}

export function restartsFile(stateDir: string): string {
  return join(stateDir, 'restarts.json');
}

/** The record, or undefined when the agent was never restarted (or runs without a supervisor). */
export function readRestarts(stateDir: string): RestartRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(restartsFile(stateDir), 'utf8')) as Partial<RestartRecord>;
    return typeof r.restarts === 'number' ? (r as RestartRecord) : undefined;
  } catch {
    return undefined;
  }
}

export function writeRestarts(stateDir: string, record: RestartRecord): void {
  writePrivateFileAtomic(restartsFile(stateDir), JSON.stringify(record));
}

/**
 * The pid of the agent that last got ready (first sync done, API open). The supervisor reads it
 * when an agent exits: one that never got ready is failing to start (a crash loop), one that did
 * was running fine and is started again whatever killed it.
 */
export function readyFile(stateDir: string): string {
  return join(stateDir, 'ready.pid');
}

export function writeReady(stateDir: string, pid: number): void {
  writePrivateFileAtomic(readyFile(stateDir), String(pid));
}

/** Did the agent with `pid` get ready? */
export function wasReady(stateDir: string, pid: number): boolean {
  try {
    return Number(readFileSync(readyFile(stateDir), 'utf8')) === pid;
  } catch {
    return false;
  }
}
