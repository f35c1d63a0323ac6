/**
 * What an agent has put in force, kept in its state directory so the next agent (after a crash,
 * an upgrade, SIGKILL) can adopt the dataplane instead of rebuilding it: the IR it applied, and
 * the kernel's fingerprint right after. Written by rename, so it is the old record or the new one.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BackendName } from '../dataplane/backend.js';
import type { IR } from '../ir/types.js';
import { privateDir, writePrivateFileAtomic } from '../util/private-files.js';

export interface AppliedRecord {
  version: 1;
  node: string;
  netns: string;
  scope: string;
  backend: BackendName;
  revision: string;
  fingerprint: string;
  appliedAt: string;
  ir: IR;
}

export function appliedPath(stateDir: string): string {
  return join(stateDir, 'applied.json');
}

export function readApplied(stateDir: string): AppliedRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(appliedPath(stateDir), 'utf8')) as AppliedRecord;
    return r.version === 1 ? r : undefined;
  } catch {
    return undefined;
  }
}

export function writeApplied(stateDir: string, record: AppliedRecord): void {
  privateDir(stateDir);
  const path = appliedPath(stateDir);
  writePrivateFileAtomic(path, JSON.stringify(record), `${path}.tmp`);
}

export function forgetApplied(stateDir: string): void {
  rmSync(appliedPath(stateDir), { force: true });
}
