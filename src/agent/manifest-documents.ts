/**
 * A manifest file's documents as the manifest cache keeps them between reads: for each document
 * (the text between `---` lines) its first line, a digest of its text and which converted object
 * it gave. A file changed in a few documents is then converted in those alone — a service change
 * re-validates one Service and one EndpointSlice, not the hundred of its file — and the other
 * objects are the very ones read before (so comparing them costs nothing either).
 *
 * Kept only for files whose documents map one to one onto objects (each document with content
 * gave exactly one object, no issues, no other files read) and that have no YAML directives or
 * end markers; anything else is converted whole, as before.
 */
import { createHash } from 'node:crypto';
import { convertManifestFile, type ConvertedFile, type ConvertedObject } from '../model/index.js';

const DIGEST_BYTES = 16;
/** A document separator line; nothing else on it (a `--- value` line is left to the parser). */
const SEPARATOR = /^---[ \t]*$/;
/** Directives and end markers: documents are then not independent of each other. */
const NOT_INDEPENDENT = /^(%|\.\.\.)/m;

export interface DocumentIndex {
  /** 1-based first line of each document's text. */
  lines: Uint32Array;
  /** DIGEST_BYTES per document: a digest of its text. */
  digests: Buffer;
  /** Index of the object the document gave (-1: none, blank or comments only). */
  objectAt: Int32Array;
}

interface Chunk {
  line: number;
  text: string;
}

function split(text: string): Chunk[] | undefined {
  if (NOT_INDEPENDENT.test(text)) return undefined;
  const lines = text.split('\n');
  const chunks: Chunk[] = [];
  let start = 0;
  for (let i = 0; i <= lines.length; i++) {
    if (i < lines.length && !SEPARATOR.test(lines[i] as string)) continue;
    chunks.push({ line: start + 1, text: lines.slice(start, i).join('\n') });
    start = i + 1;
  }
  return chunks;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest().subarray(0, DIGEST_BYTES);
}

function hasContent(text: string): boolean {
  return text.split('\n').some((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
}

/**
 * The document index of a file converted whole (`converted` from `text`), or undefined when its
 * documents do not map one to one onto its objects.
 */
export function indexDocuments(text: string, converted: ConvertedFile): DocumentIndex | undefined {
  if (converted.issues.length > 0 || converted.reads.length > 0) return undefined;
  const chunks = split(text);
  if (!chunks) return undefined;
  const objectAt = new Int32Array(chunks.length).fill(-1);
  let next = 0;
  for (let c = 0; c < chunks.length; c++) {
    if (!hasContent((chunks[c] as Chunk).text)) continue;
    const value = converted.values[next];
    const end = c + 1 < chunks.length ? (chunks[c + 1] as Chunk).line : Infinity;
    // The object must start inside this document: else the parser split the text otherwise.
    const line = value?.source.line ?? 0;
    if (!value || line < (chunks[c] as Chunk).line || line >= end) return undefined;
    objectAt[c] = next++;
  }
  if (next !== converted.values.length) return undefined;
  return {
    lines: Uint32Array.from(chunks, (c) => c.line),
    digests: Buffer.concat(chunks.map((c) => digest(c.text))),
    objectAt,
  };
}

/**
 * `text`, the new content of a file read before as `before` with `index`, converted in the
 * documents that changed alone; undefined when that cannot be done (documents added, removed or
 * moved to other lines; a changed document with an issue, or one that reads a file), and the
 * caller converts the file whole.
 */
export function convertChanged(
  file: string,
  text: string,
  before: ConvertedFile,
  index: DocumentIndex,
): { converted: ConvertedFile; index: DocumentIndex } | undefined {
  const chunks = split(text);
  if (!chunks || chunks.length !== index.lines.length) return undefined;
  const replaced = new Map<number, ConvertedObject>();
  const digests = Buffer.from(index.digests);
  let changed = 0;
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c] as Chunk;
    if (chunk.line !== index.lines[c]) return undefined;
    const d = digest(chunk.text);
    const at = c * DIGEST_BYTES;
    if (d.equals(index.digests.subarray(at, at + DIGEST_BYTES))) continue;
    // More than a few documents changed: converting the file whole costs no more.
    if (++changed > Math.max(4, chunks.length / 4)) return undefined;
    const slot = index.objectAt[c] as number;
    if (slot < 0 || !hasContent(chunk.text)) return undefined;
    // Padded to its own lines, so the lines of the object and of any issue are the file's (and
    // its fields' lines are found in the file itself, read again when asked).
    const alone = convertManifestFile(file, '\n'.repeat(chunk.line - 1) + chunk.text);
    const [o] = alone.objects;
    if (!o || alone.values.length !== 1 || alone.issues.length > 0 || alone.reads.length > 0)
      return undefined;
    replaced.set(slot, o);
    d.copy(digests, at);
  }
  return {
    converted: before.withObjects(replaced),
    index: { lines: index.lines, digests, objectAt: index.objectAt },
  };
}
