/** Small state files of the lab (state.json, etcd.json): read when present, replaced atomically. */
import { readFileSync } from 'node:fs';
import { writePrivateFileAtomic } from '../util/private-files.js';

/** The file's text, or undefined when it does not exist; any other read error is thrown. */
export function readFileIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Writes `value` as JSON through a temporary file and a rename (0600): a crash leaves the old file or the new one. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writePrivateFileAtomic(path, JSON.stringify(value, null, 1) + '\n');
}
