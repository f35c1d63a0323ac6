/**
 * How often a lab agent was restarted by its supervisor (src/lab/supervisor.ts): the supervisor
 * writes the record in the agent's state directory before each restart, the agent reads it when
 * it starts and reports it in its status and metrics.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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
  const path = restartsFile(stateDir);
  writeFileSync(`${path}.tmp`, JSON.stringify(record), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
