/** Stored objects as manifest documents, so the one validator and calculation serve files and etcd alike. */
import type { ManifestDocument } from '../model/index.js';

/** Errors in a stored object name its key, the way errors in a file name the file. */
export function storedSource(key: string): string {
  return `etcd:${key}`;
}

export function storedDocument(key: string, value: string): ManifestDocument {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = `not JSON: ${value.slice(0, 40)}`;
  }
  return { file: storedSource(key), value: parsed, lineOf: () => 1 };
}
