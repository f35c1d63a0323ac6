/**
 * The fast manifest reader (src/model/fast-yaml.ts) against the yaml library: whatever it
 * accepts must read to the same values and content lines; everything else it must decline.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LineCounter, parseAllDocuments, stringify } from 'yaml';
import { fastParseDocuments } from '../../src/model/fast-yaml.js';

const TOTAL_RUNS = Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000);
const runs = (share: number): number => Math.max(200, Math.round(TOTAL_RUNS * share));

/** What the loader takes from the yaml library: non-empty documents, values and content lines. */
function reference(text: string): { value: unknown; line: number }[] | 'error' {
  const counter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  const out: { value: unknown; line: number }[] = [];
  for (const doc of Array.isArray(docs) ? docs : [docs]) {
    if (doc.errors.length > 0) return 'error';
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    const range = (doc.contents as { range?: [number, number, number] } | null)?.range;
    out.push({ value, line: range ? counter.linePos(range[0]).line : 1 });
  }
  return out;
}

/** Accepted → identical to the library; returns whether it was accepted. */
function check(text: string): boolean {
  const fast = fastParseDocuments(text);
  if (!fast) return false;
  const ref = reference(text);
  expect(ref, text).not.toBe('error');
  expect(fast, text).toEqual(ref);
  // Same prototypes and key order, not just deep equality.
  expect(JSON.stringify(fast.map((d) => d.value))).toBe(
    JSON.stringify((ref as { value: unknown }[]).map((d) => d.value)),
  );
  return true;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((n) => {
      const p = join(dir, n);
      if (statSync(p).isDirectory()) return yamlFiles(p);
      return /\.(ya?ml)$/.test(n) ? [p] : [];
    });
}

const keyArb = fc.constantFrom(
  'apiVersion',
  'kind',
  'metadata',
  'name',
  'labels',
  'app.kubernetes.io/name',
  'kubernetes.io/service-name',
  'a',
  'b_c',
  'x-y',
  'null',
  'True',
  'on',
  'a b',
  'k:v',
  '#c',
  '1',
  "it's",
  '__proto__',
  '<<',
);
const scalarArb = fc.oneof(
  fc.constantFrom(
    'v1',
    'web',
    '198.18.0.2',
    '10.0.0.0/8',
    'fd00::1',
    'http://x:80/a',
    'a b',
    'a #b',
    'a: b',
    'x:',
    '- x',
    '',
    ' lead',
    'trail ',
    'null',
    'Null',
    'NULL',
    '~',
    'true',
    'False',
    'yes',
    '0o17',
    '0x1F',
    '1e3',
    '.5',
    '1.',
    '.inf',
    '-.Inf',
    '.nan',
    '0123',
    '+12',
    '-7',
    '1_000',
    "it's",
    'say "hi"',
    'back\\slash',
    '[x]',
    '{y}',
    'a,b',
    '*alias',
    '&anchor',
    '!tag',
    '|',
    '>',
    '@at',
    '`tick',
    '%pct',
    '?q',
    '.',
    '-',
    'a\tb',
    'line\nbreak',
  ),
  fc.integer({ min: -100_000, max: 100_000 }),
  fc.boolean(),
  fc.constant(null),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 6 }),
);
const valueArb: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalarArb,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(keyArb, tie('value'), { maxKeys: 4 }),
  ),
})).value;
const docArb = fc.dictionary(keyArb, valueArb, { minKeys: 1, maxKeys: 5 });
const styleArb = fc.record({
  flowLevel: fc.constantFrom(undefined, 1, 2, 3),
  indentSeq: fc.boolean(),
  indent: fc.constantFrom(2, 4),
  defaultStringType: fc.constantFrom('PLAIN' as const, 'QUOTE_SINGLE' as const, 'QUOTE_DOUBLE' as const),
  defaultKeyType: fc.constantFrom(null, 'PLAIN' as const, 'QUOTE_DOUBLE' as const),
});

type Style = typeof styleArb extends fc.Arbitrary<infer S> ? S : never;

function render(docs: Record<string, unknown>[], style: Style): string {
  return docs
    .map((d) =>
      stringify(d, {
        ...(style.flowLevel !== undefined ? { flowLevel: style.flowLevel } : {}),
        indentSeq: style.indentSeq,
        indent: style.indent,
        defaultStringType: style.defaultStringType,
        defaultKeyType: style.defaultKeyType,
        lineWidth: 0,
      }),
    )
    .join('---\n');
}

describe('fast manifest reader', () => {
  it('reads every fixture and example exactly as the yaml library does (and accepts them)', () => {
    const files = [...yamlFiles('test/fixtures'), ...yamlFiles('examples')];
    expect(files.length).toBeGreaterThan(10);
    const accepted = files.filter((f) => check(readFileSync(f, 'utf8')));
    expect(accepted.length).toBeGreaterThan(files.length / 2);
  });

  it('reads the agent bench manifests (one-line flow collections) and kubectl-style YAML', () => {
    const text =
      '# cluster\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns0\n  labels: { team: t0 }\n---\n' +
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p0\n  namespace: ns0\n  labels: { app: a0, role: r0 }\n' +
      'spec:\n  nodeName: node-1\n  containers: [{ name: c, ports: [{ containerPort: 8080, protocol: TCP }] }]\n' +
      'status: { podIP: 198.18.0.2 }\n---\n' +
      'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: pol0, namespace: ns0 }\nspec:\n' +
      '  podSelector: { matchExpressions: [{ key: app, operator: In, values: [a0, a1] }] }\n' +
      '  policyTypes: [Ingress, Egress]\n' +
      '  ingress:\n    - from: [{ namespaceSelector: { matchLabels: { team: t0 } } }]\n      ports: [{ port: 8000, protocol: TCP }]\n' +
      '  egress:\n  - to:\n    - podSelector:\n        matchLabels:\n          "role": \'r1\' # quoted\n    ports:\n    -\n      port: 9000\n' +
      '---\n---\n# only a comment\n';
    expect(check(text)).toBe(true);
  });

  it('declines what it does not read, leaving it (and its errors) to the yaml library', () => {
    for (const text of [
      '',
      'a: &x 1\nb: *x\n',
      'a: !!str 1\n',
      'a: |\n  text\n',
      'a: plain\n  continued\n',
      'a: [1,\n  2]\n',
      'a: "esc\\n"\n',
      'a: 1\na: 2\n',
      'a:\tb\n',
      'a: 1\r\n',
      '%YAML 1.2\n---\na: 1\n',
      'a: 1\n...\n',
      '- a\n',
      'plain\n',
      'a: 0x10\n',
      'a: 1.5\n',
      '? a\n: b\n',
      'a: b: c\n',
      'a:\n  b: 1\n c: 2\n',
      '__proto__: 1\n',
    ])
      expect(fastParseDocuments(text), JSON.stringify(text)).toBeUndefined();
  });

  it('agrees with the yaml library on generated documents in every style', () => {
    fc.assert(
      fc.property(fc.array(docArb, { minLength: 1, maxLength: 3 }), styleArb, (docs, style) => {
        check(render(docs, style));
      }),
      { numRuns: runs(0.02) },
    );
  });

  it('agrees with the yaml library on damaged text (accepted only when valid and identical)', () => {
    const damage = fc.constantFrom(
      ' ',
      '  ',
      '\n',
      ':',
      ': ',
      '- ',
      '#',
      ' #',
      "'",
      '"',
      '{',
      '}',
      '[',
      ']',
      ',',
      '---\n',
      '&',
      '*',
      '!',
      '|',
      '\t',
      'x',
    );
    fc.assert(
      fc.property(
        fc.array(docArb, { minLength: 1, maxLength: 2 }),
        styleArb,
        fc.array(fc.tuple(fc.nat(), damage, fc.nat({ max: 2 })), { minLength: 1, maxLength: 3 }),
        (docs, style, edits) => {
          let text = render(docs, style);
          for (const [at, insert, cut] of edits) {
            const i = at % (text.length + 1);
            text = text.slice(0, i) + insert + text.slice(i + cut);
          }
          check(text);
        },
      ),
      { numRuns: runs(0.03) },
    );
  });
});
