/**
 * Reading manifest files into YAML documents that still know where each field was written, so
 * validation errors can name a line.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { isMap, isNode, isSeq, LineCounter, parseAllDocuments, type Document } from 'yaml';
import type { ManifestIssue } from './errors.js';
import { fastParseDocuments } from './fast-yaml.js';

export interface ManifestDocument {
  file: string;
  /** The document as plain JavaScript (null for an empty document). */
  value: unknown;
  /** 1-based line of the node at `path`, or of its nearest ancestor that exists. */
  lineOf(path: readonly PropertyKey[]): number;
}

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Files named directly are read whatever their extension; directories recursively, YAML only, sorted. */
export function expandManifestPaths(paths: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (p: string, explicit: boolean): void => {
    let st;
    try {
      st = statSync(p);
    } catch {
      throw new Error(`${p}: no such file or directory`);
    }
    if (st.isDirectory()) {
      for (const entry of readdirSync(p).sort()) walk(join(p, entry), false);
    } else if (explicit || MANIFEST_EXTENSIONS.has(extname(p))) {
      out.push(p);
    }
  };
  for (const p of paths) walk(p, true);
  return out;
}

function lineLocator(doc: Document, counter: LineCounter): (path: readonly PropertyKey[]) => number {
  return (path) => {
    let node: unknown = doc.contents;
    let best = 1;
    const lineAt = (n: unknown): number | undefined =>
      isNode(n) && n.range ? counter.linePos(n.range[0]).line : undefined;
    best = lineAt(node) ?? best;
    for (const key of path) {
      if (isMap(node)) {
        const pair = node.items.find(
          (it) => (isNode(it.key) ? String(it.key.toJSON()) : String(it.key)) === String(key),
        );
        if (!pair) break;
        // Point at the key itself: that is where a wrong value or an unknown field is written.
        best = lineAt(pair.key) ?? best;
        node = pair.value;
        if (isMap(node) || isSeq(node)) continue;
        if (isNode(node) && node.range && path[path.length - 1] === key) best = lineAt(node) ?? best;
      } else if (isSeq(node) && typeof key === 'number') {
        node = node.items[key];
        if (node === undefined) break;
        best = lineAt(node) ?? best;
      } else {
        break;
      }
    }
    return best;
  };
}

export function readManifestDocuments(
  file: string,
  text: string = readFileSync(file, 'utf8'),
): { documents: ManifestDocument[]; issues: ManifestIssue[] } {
  const fast = fastParseDocuments(text);
  if (fast) {
    // Lines of fields are only asked for when something is wrong: the yaml library's syntax tree
    // of the file is then built once, on demand, and its documents line up with these one to one
    // (both leave the same empty documents out and read the same values).
    let full: ManifestDocument[] | undefined;
    const documents = fast.map(({ value, line }, i): ManifestDocument => ({
      file,
      value,
      lineOf: (path) => {
        if (path.length === 0) return line;
        full ??= parseDocuments(file, text).documents;
        return full[i]?.lineOf(path) ?? line;
      },
    }));
    return { documents, issues: [] };
  }
  return parseDocuments(file, text);
}

function parseDocuments(
  file: string,
  text: string,
): { documents: ManifestDocument[]; issues: ManifestIssue[] } {
  const counter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  const documents: ManifestDocument[] = [];
  const issues: ManifestIssue[] = [];
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        issues.push({
          file,
          line: counter.linePos(e.pos[0]).line,
          field: '',
          message: `YAML: ${e.message.split('\n')[0]}`,
        });
      }
      continue;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    documents.push({ file, value, lineOf: lineLocator(doc, counter) });
  }
  return { documents, issues };
}
