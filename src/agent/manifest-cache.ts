/**
 * Manifest files converted once: a directory source keeps each file's model objects, keyed by path
 * and content hash, so a change to one file of a hundred costs one parse, not a hundred, and a
 * change to a few documents of a file converts those documents alone (manifest-documents.ts). Size,
 * modification time and inode are checked first (no read at all when they match); a file whose
 * metadata moved is read and hashed, and parsed only when its content differs.
 *
 * Nothing of a file's text is kept (model/loader's convertManifestFile finds a field's line by
 * reading the file again when an issue needs it): the cache costs what the model objects cost,
 * and the model shares them.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { convertManifestFile, type ConvertedFile } from '../model/index.js';
import { INPUT_LIMITS } from '../model/limits.js';
import { convertChanged, indexDocuments, type DocumentIndex } from './manifest-documents.js';

/**
 * A file modified this recently may be written again within the clock's granularity without its
 * metadata changing: its metadata is not trusted until it is older (its content is hashed again).
 */
const SETTLE_NS = 2_000_000_000n;

interface Entry {
  /** Size, mtime and inode when the file was last read; '' = check the content next time. */
  stat: string;
  /** The file's content hash. */
  textHash: string;
  /** Its content and that of the files its objects read: what the revision is made of. */
  hash: string;
  converted: ConvertedFile;
  /** Other files the objects read (a Prefilter's list), with their stat when read. */
  reads: { path: string; stat: string }[];
  /** Its documents, when a change to some of them can be converted alone (manifest-documents.ts). */
  documents?: DocumentIndex;
}

export interface ManifestRead {
  /** Each file's converted objects, in the order the files were given. */
  parts: ConvertedFile[];
  /** Content hash of each file, in the same order. */
  hashes: string[];
  /** Files whose content was parsed this time (new or changed). */
  parsed: string[];
  /** Files cached before that are gone now. */
  removed: string[];
}

export interface ManifestCacheStats {
  /** Files parsed (first read or changed content). */
  parses: number;
  /** Of those, files converted in their changed documents alone. */
  partial: number;
  /** Files whose metadata moved but whose content was the same. */
  rehashed: number;
  /** Files taken from the cache on metadata alone. */
  hits: number;
}

function statOf(path: string): { key: string; size: number; mtimeNs: bigint } | undefined {
  try {
    const s = statSync(path, { bigint: true });
    return { key: `${s.size}:${s.mtimeNs}:${s.ino}`, size: Number(s.size), mtimeNs: s.mtimeNs };
  } catch {
    return undefined;
  }
}

export class ManifestCache {
  readonly stats: ManifestCacheStats = { parses: 0, partial: 0, rehashed: 0, hits: 0 };
  private readonly entries = new Map<string, Entry>();

  /** Files cached now. */
  get size(): number {
    return this.entries.size;
  }

  /** Whether an object of a cached file read `path` (a Prefilter's list). */
  reads(path: string): boolean {
    for (const e of this.entries.values()) if (e.reads.some((r) => r.path === path)) return true;
    return false;
  }

  read(files: readonly string[]): ManifestRead {
    const out: ManifestRead = { parts: [], hashes: [], parsed: [], removed: [] };
    const wanted = new Set(files);
    for (const path of [...this.entries.keys()])
      if (!wanted.has(path)) {
        this.entries.delete(path);
        out.removed.push(path);
      }
    for (const file of files) {
      const entry = this.entry(file, out);
      out.parts.push(entry.converted);
      out.hashes.push(entry.hash);
    }
    return out;
  }

  private entry(file: string, out: ManifestRead): Entry {
    const now = BigInt(Date.now()) * 1_000_000n;
    const stat = statOf(file);
    const cached = this.entries.get(file);
    const readsSame = (e: Entry): boolean => e.reads.every((r) => statOf(r.path)?.key === r.stat);
    if (cached && stat && cached.stat === stat.key && readsSame(cached)) {
      this.stats.hits++;
      return cached;
    }
    const settled = (s: { key: string; mtimeNs: bigint }): string =>
      now - s.mtimeNs > SETTLE_NS ? s.key : '';
    // Too large or unreadable: the loader reports it (with the file's name) as an issue.
    if (!stat || stat.size > INPUT_LIMITS.fileBytes) return this.parse(file, undefined, '', '', out);
    let text: Buffer;
    try {
      text = readFileSync(file);
    } catch {
      return this.parse(file, undefined, '', '', out);
    }
    const hash = createHash('sha256').update(text).digest('hex');
    if (cached && cached.textHash === hash && readsSame(cached)) {
      this.stats.rehashed++;
      cached.stat = settled(stat);
      return cached;
    }
    return this.parse(file, text.toString('utf8'), hash, settled(stat), out, cached);
  }

  private parse(
    file: string,
    text: string | undefined,
    hash: string,
    stat: string,
    out: ManifestRead,
    cached?: Entry,
  ): Entry {
    this.stats.parses++;
    out.parsed.push(file);
    const partly =
      text !== undefined && cached?.documents
        ? convertChanged(file, text, cached.converted, cached.documents)
        : undefined;
    if (partly) this.stats.partial++;
    const converted = partly?.converted ?? convertManifestFile(file, text);
    // An unreadable file has no content to hash: its issue's text stands for it in the revision.
    const textHash = hash || createHash('sha256').update(JSON.stringify(converted.issues)).digest('hex');
    const reads = converted.reads.map((path) => ({ path, stat: statOf(path)?.key ?? '' }));
    const documents = partly?.index ?? (text !== undefined ? indexDocuments(text, converted) : undefined);
    const entry: Entry = {
      stat,
      textHash,
      hash: withReads(textHash, converted),
      converted,
      reads,
      ...(documents ? { documents } : {}),
    };
    this.entries.set(file, entry);
    return entry;
  }
}

/** A file's hash including what its objects read from other files (a Prefilter's list, as read). */
function withReads(textHash: string, converted: ConvertedFile): string {
  if (converted.reads.length === 0) return textHash;
  return createHash('sha256')
    .update(textHash)
    .update(JSON.stringify([converted.values, converted.issues]))
    .digest('hex');
}

/** The revision of a set of files: their names and content hashes. */
export function manifestRevision(files: readonly string[], hashes: readonly string[]): string {
  const h = createHash('sha256');
  files.forEach((f, i) =>
    h
      .update(f)
      .update('\0')
      .update(hashes[i] ?? '')
      .update('\n'),
  );
  return h.digest('hex').slice(0, 16);
}
