/**
 * Root's own files: the state under /run/switchyard (lab state, desired state, agents' records
 * and caches, logs, etcd's keys) describes the policy model and must not be readable by other
 * local users. Directories are 0700 and files 0600, whatever the umask; ones an older version
 * made wider are narrowed on the next write.
 */
import { chmodSync, closeSync, fchmodSync, mkdirSync, openSync, renameSync, writeFileSync } from 'node:fs';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Creates `path` (and missing parents) and makes `path` itself 0700. */
export function privateDir(path: string): string {
  mkdirSync(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  chmodSync(path, PRIVATE_DIR_MODE);
  return path;
}

/**
 * Writes `text` through a temporary file and a rename, 0600: a crash leaves the old file or the
 * new one, never half of one, and the new one is private even if the old one was not.
 */
export function writePrivateFileAtomic(path: string, text: string, tmp = `${path}.${process.pid}.tmp`): void {
  writeFileSync(tmp, text, { mode: PRIVATE_FILE_MODE });
  // An older tmp file left by a crash keeps its mode on rewrite: narrow it.
  chmodSync(tmp, PRIVATE_FILE_MODE);
  renameSync(tmp, path);
}

/** Opens a log for appending, 0600 (a log from before is narrowed): returns the descriptor. */
export function openPrivateLog(path: string): number {
  const fd = openSync(path, 'a', PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}
