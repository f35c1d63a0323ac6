/**
 * Reading manifest files into YAML documents that still know where each field was written, so
 * validation errors can name a line.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { isMap, isNode, isSeq, LineCounter, parseAllDocuments, type Document } from 'yaml';
import type { ManifestIssue } from './errors.js';
import { fastParseDocuments } from './fast-yaml.js';
import { ambiguousScalars, INPUT_LIMITS, textProblem, valueProblems, type ValueProblem } from './limits.js';

export interface ManifestDocument {
  file: string;
  /** The document as plain JavaScript (null for an empty document). */
  value: unknown;
  /** 1-based line of the node at `path`, or of its nearest ancestor that exists. */
  lineOf(path: readonly PropertyKey[]): number;
  /**
   * What makes the document unusable although it parsed (over a limit, a scalar kubectl reads
   * differently, a stored value under the wrong key): reported at the object's fields, never used.
   */
  problems?: readonly ValueProblem[];
}

/** A file's text, refused (with the reason) when it is larger than INPUT_LIMITS.fileBytes. */
export function readBoundedFile(file: string): string {
  const size = statSync(file).size;
  if (size > INPUT_LIMITS.fileBytes)
    throw new InputLimitError(`${file} is ${size} bytes, more than the limit of ${INPUT_LIMITS.fileBytes}`);
  return readFileSync(file, 'utf8');
}

export class InputLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputLimitError';
  }
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
  given?: string,
): { documents: ManifestDocument[]; issues: ManifestIssue[] } {
  const refuse = (line: number, message: string): { documents: []; issues: ManifestIssue[] } => ({
    documents: [],
    issues: [{ file, line, field: '', message }],
  });
  let text: string;
  try {
    text = given ?? readBoundedFile(file);
  } catch (e) {
    if (e instanceof InputLimitError) return refuse(1, e.message);
    throw e;
  }
  if (text.length > INPUT_LIMITS.fileBytes)
    return refuse(1, `${text.length} characters, more than the limit of ${INPUT_LIMITS.fileBytes}`);
  const problem = textProblem(text);
  if (problem) return refuse(problem.line, problem.message);
  try {
    return readChecked(file, text);
  } catch (e) {
    // The limits above make this unreachable for any input we know of; if one still nests deeper
    // than the stack, it is this file's fault and is reported as such, not as a crash.
    if (e instanceof RangeError) return refuse(1, `YAML: cannot be read (${e.message}): nested too deeply`);
    throw e;
  }
}

function withProblems(doc: ManifestDocument, problems: readonly ValueProblem[]): ManifestDocument {
  return problems.length > 0 ? { ...doc, problems } : doc;
}

function readChecked(file: string, text: string): { documents: ManifestDocument[]; issues: ManifestIssue[] } {
  const fast = fastParseDocuments(text);
  if (fast) {
    // Lines of fields are only asked for when something is wrong: the yaml library's syntax tree
    // of the file is then built once, on demand, and its documents line up with these one to one
    // (both leave the same empty documents out and read the same values).
    let full: ManifestDocument[] | undefined;
    const documents = fast.map(({ value, line }, i): ManifestDocument =>
      withProblems(
        {
          file,
          value,
          lineOf: (path) => {
            if (path.length === 0) return line;
            full ??= parseDocuments(file, text).documents;
            return full[i]?.lineOf(path) ?? line;
          },
        },
        valueProblems(value),
      ),
    );
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
    const limits = valueProblems(value);
    // Within the limits, the syntax tree is shallow enough to walk for scalars kubectl reads otherwise.
    const problems = limits.length > 0 ? limits : ambiguousScalars(doc);
    documents.push(withProblems({ file, value, lineOf: lineLocator(doc, counter) }, problems));
  }
  return { documents, issues };
}
