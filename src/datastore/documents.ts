/** Stored objects as manifest documents, so the one validator and calculation serve files and etcd alike. */
import { excerpt, type ManifestDocument } from '../model/index.js';
import { formatRef, parseObjectKey, refOf } from './keys.js';

/** Errors in a stored object name its key, the way errors in a file name the file. */
export function storedSource(key: string): string {
  return `etcd:${key}`;
}

/** Why a stored value cannot be what its key says, or undefined when it can. */
export function storedValueProblem(key: string, value: unknown): string | undefined {
  const expected = parseObjectKey(key);
  const found = refOf(value);
  if (!expected || !found) return undefined;
  if (formatRef(expected) === formatRef(found)) return undefined;
  return `the key holds ${formatRef(expected)} but the stored object is ${formatRef(found)}`;
}

export function storedDocument(key: string, value: string): ManifestDocument {
  const lineOf = (): number => 1;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (e) {
    return {
      file: storedSource(key),
      value: null,
      lineOf,
      problems: [{ path: [], message: `not JSON (${(e as Error).message}): ${excerpt(value)}` }],
    };
  }
  const problem = storedValueProblem(key, parsed);
  return {
    file: storedSource(key),
    value: parsed,
    lineOf,
    ...(problem ? { problems: [{ path: ['kind'], message: problem }] } : {}),
  };
}
