/**
 * Bounds on what the manifest reader accepts, checked before and right after parsing, so a hostile
 * or broken file costs bounded work and gives an error with a file and line, never a stack
 * overflow or a 50 MB message. Real manifests are far below every limit: the deepest Kubernetes
 * object we read nests about 12 levels, a label value is at most 63 characters and the API server
 * refuses objects over 1.5 MiB.
 */
import { isMap, isPair, isScalar, isSeq, type Document } from 'yaml';
import { excerpt } from './errors.js';

export const INPUT_LIMITS = {
  /** One manifest file (and one Prefilter list file), read from disk. */
  fileBytes: 64 * 1024 * 1024,
  /** One YAML document of a file (`---` to `---`). Larger address lists belong in a Prefilter file. */
  documentChars: 16 * 1024 * 1024,
  /** One scalar (a string, a number): Kubernetes allows 256 KiB for all annotations of an object. */
  scalarChars: 256 * 1024,
  /** Nesting of mappings and sequences in one document. */
  depth: 100,
} as const;

/** A problem inside a parsed document: reported at `path` of the object, by the validator. */
export interface ValueProblem {
  path: PropertyKey[];
  message: string;
}

/** A problem found in the raw text (before parsing): a 1-based line and what is wrong. */
export interface TextProblem {
  line: number;
  message: string;
}

const tooDeep = (): string => `nested more than ${INPUT_LIMITS.depth} levels deep (the limit)`;

/**
 * Leading block indicators of a line (`- - - x`, `? `): each opens one level. A scan, not a
 * regular expression: it runs on every line of every manifest and allocates nothing.
 */
function compactIndicators(line: string): number {
  let i = 0;
  while (line.charCodeAt(i) === SPACE) i++;
  let count = 0;
  for (;;) {
    const c = line.charCodeAt(i);
    // An indicator counts when one or more spaces follow it.
    if ((c !== DASH && c !== QUESTION) || line.charCodeAt(i + 1) !== SPACE) return count;
    count++;
    i += 2;
    while (line.charCodeAt(i) === SPACE) i++;
  }
}
const SPACE = 32;
const DASH = 45;
const QUESTION = 63;

/**
 * Counts flow brackets outside quotes and comments through a line. A bracket only opens a
 * collection at the start of a value or inside another one, so `image: repo[1]` counts nothing.
 */
class FlowDepth {
  depth = 0;
  private quote: string | undefined;

  /** Returns true when the line goes deeper than the limit. */
  line(text: string): boolean {
    if (this.depth === 0 && this.quote === undefined && !/[[{]/.test(text)) return false;
    let valueStart = true;
    for (let i = 0; i < text.length; i++) {
      const c = text[i] as string;
      if (this.quote !== undefined) {
        if (c === '\\' && this.quote === '"') i++;
        else if (c === this.quote) this.quote = undefined;
        continue;
      }
      if (c === '#' && (i === 0 || text[i - 1] === ' ')) return false;
      if ((c === '"' || c === "'") && (valueStart || this.depth > 0)) this.quote = c;
      else if ((c === '[' || c === '{') && (valueStart || this.depth > 0)) {
        if (++this.depth > INPUT_LIMITS.depth) return true;
      } else if ((c === ']' || c === '}') && this.depth > 0) this.depth--;
      if (c !== ' ') valueStart = c === ':' || c === '-' || c === ',' || c === '[' || c === '{' || c === '?';
    }
    if (this.depth === 0) this.quote = undefined;
    return false;
  }
}

/**
 * What the text itself breaks, found in one pass without parsing: a document over its size, or
 * the cheap ways to nest deeply on one line (`[[[[…`, `- - - - …`). Deep nesting by indentation
 * costs quadratic text, so the file limit bounds it, and the parsed value is checked exactly
 * afterwards (valueProblems).
 */
export function textProblem(text: string): TextProblem | undefined {
  const flow = new FlowDepth();
  const tooBig = (line: number): TextProblem => ({
    line,
    message: `YAML: a document of more than ${INPUT_LIMITS.documentChars} characters (the limit; long address lists belong in a Prefilter file)`,
  });
  let docStart = 0;
  let docLine = 1;
  let offset = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.startsWith('---') || line.startsWith('...')) {
      if (offset - docStart > INPUT_LIMITS.documentChars) return tooBig(docLine);
      docStart = offset;
      docLine = i + 1;
    }
    offset += line.length + 1;
    if (compactIndicators(line) > INPUT_LIMITS.depth || flow.line(line))
      return { line: i + 1, message: `YAML: ${tooDeep()}` };
  }
  return offset - docStart > INPUT_LIMITS.documentChars ? tooBig(docLine) : undefined;
}

/**
 * Depth and scalar size of a parsed document, walked without recursion; the first problem of
 * each kind is enough to fix the file, and walking stops under a too-deep node.
 */
export function valueProblems(value: unknown): ValueProblem[] {
  // Nearly every document is within the limits: say so without building the walk's entries.
  if (withinLimits(value)) return [];
  const out: ValueProblem[] = [];
  let deep = false;
  let long = false;
  // Each entry links to its parent; a path is only built for a problem.
  interface Entry {
    v: unknown;
    depth: number;
    key?: PropertyKey;
    parent?: Entry;
  }
  const pathOf = (e: Entry): PropertyKey[] => {
    const path: PropertyKey[] = [];
    for (let at: Entry | undefined = e; at?.parent; at = at.parent) path.push(at.key as PropertyKey);
    return path.reverse();
  };
  const stack: Entry[] = [{ v: value, depth: 0 }];
  while (stack.length > 0 && !(deep && long)) {
    const e = stack.pop() as Entry;
    const v = e.v;
    if (typeof v === 'string') {
      if (!long && v.length > INPUT_LIMITS.scalarChars) {
        long = true;
        out.push({
          path: pathOf(e),
          message: `a value of ${v.length} characters is longer than the limit of ${INPUT_LIMITS.scalarChars}: ${excerpt(v)}`,
        });
      }
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    if (e.depth >= INPUT_LIMITS.depth) {
      if (!deep) out.push({ path: pathOf(e), message: tooDeep() });
      deep = true;
      continue;
    }
    const entries = Array.isArray(v) ? v.map((x, i) => [i, x] as const) : Object.entries(v);
    for (const [key, x] of entries) {
      if (typeof key === 'string' && key.length > INPUT_LIMITS.scalarChars && !long) {
        long = true;
        out.push({
          path: pathOf(e),
          message: `a key of ${key.length} characters is longer than the limit of ${INPUT_LIMITS.scalarChars}`,
        });
      }
      stack.push({ v: x, depth: e.depth + 1, key, parent: e });
    }
  }
  return out;
}

/** Whether valueProblems would find nothing: the same walk, without paths or entries. */
function withinLimits(value: unknown): boolean {
  const values: unknown[] = [value];
  const depths: number[] = [0];
  while (values.length > 0) {
    const v = values.pop();
    const depth = depths.pop() as number;
    if (typeof v === 'string') {
      if (v.length > INPUT_LIMITS.scalarChars) return false;
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= INPUT_LIMITS.depth) return false;
    if (Array.isArray(v)) {
      for (const x of v as unknown[]) {
        values.push(x);
        depths.push(depth + 1);
      }
      continue;
    }
    // for…in sees every own enumerable key Object.entries does (and no other on parsed values).
    for (const key in v) {
      if (key.length > INPUT_LIMITS.scalarChars) return false;
      values.push((v as Record<string, unknown>)[key]);
      depths.push(depth + 1);
    }
  }
  return true;
}

/**
 * Plain scalars that YAML 1.2 (this reader) and YAML 1.1 (kubectl, through sigs.k8s.io/yaml and
 * go-yaml) read differently. Left alone, `port: 0120` would be port 120 here and port 80 in a
 * cluster, so they are refused with a way to write what is meant.
 */
const YAML11_BOOLEAN = /^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/;
const YAML11_TRUE = /^(?:y|Y|yes|Yes|YES|on|On|ON)$/;
const YAML11_OCTAL = /^[-+]?0[0-7]+$/;
const YAML11_INTEGER = /^[-+]?(?:0b[01_]+|[0-9][0-9_]*_[0-9_]*)$/;

export function ambiguousScalarMessage(source: string): string | undefined {
  if (YAML11_BOOLEAN.test(source))
    return (
      `'${source}' is the string "${source}" in YAML 1.2 but the boolean ${YAML11_TRUE.test(source)} for kubectl ` +
      `(YAML 1.1): write ${YAML11_TRUE.test(source)}, or quote it ('${source}') if a string is meant`
    );
  if (YAML11_OCTAL.test(source)) {
    const octal = parseInt(source, 8);
    return (
      `'${source}' is ${parseInt(source, 10)} in YAML 1.2 but octal ${octal} for kubectl (YAML 1.1): ` +
      `write ${octal}, or quote it if a string is meant`
    );
  }
  if (YAML11_INTEGER.test(source))
    return (
      `'${source}' is read differently by YAML 1.2 and by kubectl (YAML 1.1): write a plain decimal number ` +
      `without leading zeros or '_', or quote it if a string is meant`
    );
  return undefined;
}

/** Every plain scalar (key or value) of a parsed document that kubectl would read differently. */
export function ambiguousScalars(doc: Document): ValueProblem[] {
  const out: ValueProblem[] = [];
  const stack: { node: unknown; path: PropertyKey[] }[] = [{ node: doc.contents, path: [] }];
  const check = (node: unknown, path: PropertyKey[]): void => {
    if (!isScalar(node) || node.type !== 'PLAIN' || typeof node.source !== 'string') return;
    const message = ambiguousScalarMessage(node.source);
    if (message) out.push({ path, message });
  };
  while (stack.length > 0) {
    const { node, path } = stack.pop() as { node: unknown; path: PropertyKey[] };
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
        check(pair.key, [...path, key]);
        stack.push({ node: pair.value, path: [...path, key] });
      }
    } else if (isSeq(node)) node.items.forEach((item, i) => stack.push({ node: item, path: [...path, i] }));
    else check(node, path);
  }
  return out.reverse();
}
