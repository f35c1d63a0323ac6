/**
 * Where an agent serves Prometheus metrics, recorded in its state directory: `node status` shows
 * it, a scrape config can be generated from it, and a restarted agent asked for "any port"
 * (127.0.0.1:0, what lab agents ask for) takes the port it had before when it is still free, so
 * a Prometheus target stays valid across restarts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFileAtomic } from '../util/private-files.js';

export function metricsUrlFile(stateDir: string): string {
  return join(stateDir, 'metrics-url');
}

/** The URL the agent last served metrics on, or undefined. */
export function readMetricsUrl(stateDir: string): string | undefined {
  try {
    return readFileSync(metricsUrlFile(stateDir), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function writeMetricsUrl(stateDir: string, url: string): void {
  writePrivateFileAtomic(metricsUrlFile(stateDir), `${url}\n`);
}

export interface ListenAddress {
  host: string;
  port: number;
  /** Port 0 asked for, and this port was recorded: try it first, fall back to any port. */
  preferredPort?: number;
}

/** The address to listen on: as asked, with the recorded port preferred when any port will do. */
export function metricsAddress(stateDir: string, asked: { host: string; port: number }): ListenAddress {
  if (asked.port !== 0) return asked;
  const recorded = readMetricsUrl(stateDir);
  const port = recorded ? Number(/^http:\/\/[^/]+:(\d+)\/metrics$/.exec(recorded)?.[1]) : NaN;
  return Number.isInteger(port) && port > 0 && port < 65536 ? { ...asked, preferredPort: port } : asked;
}
