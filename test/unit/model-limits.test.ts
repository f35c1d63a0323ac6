/**
 * Bounded input and the API server's reading of it (issue 24, items 9, 14, 15): nesting, document
 * and scalar limits give located issues (never a stack overflow), errors quote a short excerpt,
 * scalars kubectl reads otherwise are refused, policyTypes and podSelector are validated and
 * defaulted as the API does, Prefilter list entries are stored normalised, and stored values are
 * checked against their keys.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { storedDocument } from '../../src/datastore/documents.js';
import type { EtcdStore, Snapshot } from '../../src/datastore/etcd.js';
import { objectKey } from '../../src/datastore/keys.js';
import { listObjects } from '../../src/datastore/read.js';
import {
  formatIssue,
  validateManifestDocuments,
  validateManifestTexts,
  type ManifestIssue,
} from '../../src/model/index.js';
import { INPUT_LIMITS } from '../../src/model/limits.js';
import { expectIssue, lineContaining } from '../support/manifests.js';

const FILE = 'manifests/limits.yaml';

function validate(text: string): { model?: unknown; issues: ManifestIssue[] } {
  return validateManifestTexts([{ file: FILE, text }]);
}

const namespaceWithLabels = (labels: string): string =>
  `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: ${labels}\n`;

const policy = (spec: string): string => `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np
  namespace: default
spec:
${spec}`;

describe('nesting, size and scalar limits', () => {
  it('a 100,000-deep flow collection is an issue at its line, not a stack overflow', () => {
    const text = namespaceWithLabels(`${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expectIssue(issues, { file: FILE, line: 5, field: '', message: /nested more than 100 levels deep/ });
  });

  it('a 100,000-deep compact block sequence is an issue at its line', () => {
    const text = `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    ${'- '.repeat(100_000)}x\n`;
    const { issues } = validate(text);
    expectIssue(issues, { file: FILE, line: 6, field: '', message: /nested more than 100 levels deep/ });
  });

  it('nesting by indentation past the limit is reported at the object and field where it passes it', () => {
    const depth = INPUT_LIMITS.depth + 5;
    const lines = ['apiVersion: v1', 'kind: Namespace', 'metadata:', '  name: shop', 'spec:'];
    for (let i = 0; i < depth; i++) lines.push(`${' '.repeat(i + 1)}k${i}:`);
    lines.push(`${' '.repeat(depth + 1)}leaf: 1`);
    const { model, issues } = validate(lines.join('\n') + '\n');
    expect(model).toBeUndefined();
    expect(issues).toHaveLength(1);
    const issue = issues[0] as ManifestIssue;
    expect(issue).toMatchObject({ file: FILE, kind: 'Namespace', object: 'shop' });
    expect(issue.message).toMatch(/nested more than 100 levels deep/);
    expect(issue.field.startsWith('spec.k0.k1.')).toBe(true);
    expect(issue.line).toBeGreaterThan(100);
  });

  /** The one issue a Namespace whose label `app` is `value` gets, checked to be short. */
  const labelIssue = (value: string, message: RegExp, maxLength: number): void => {
    const { model, issues } = validate(namespaceWithLabels(`{ app: ${value} }`));
    expect(model).toBeUndefined();
    const issue = expectIssue(issues, {
      file: FILE,
      line: 5,
      kind: 'Namespace',
      object: 'shop',
      field: 'metadata.labels.app',
      message,
    });
    expect(formatIssue(issue).length).toBeLessThan(maxLength);
  };

  it('a 1 MB label value is refused by the scalar limit with a short excerpt', () => {
    labelIssue(
      'v'.repeat(1024 * 1024),
      /a value of 1048576 characters is longer than the limit of 262144/,
      300,
    );
  });

  it('an invalid label value under the scalar limit is quoted as an excerpt, not whole', () => {
    labelIssue(`${'x'.repeat(100_000)}-`, /invalid label value 'x{64}… \(100001 characters\)'/, 400);
  });

  it('a document over the size limit is refused at its first line before it is parsed', () => {
    const cidrs = Array.from(
      { length: 1_100_000 },
      (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`,
    );
    const text = `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: switchyard.dev/v1alpha1\nkind: Prefilter\nmetadata:\n  name: big\nspec:\n  cidrs: [${cidrs.join(', ')}]\n`;
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: 5,
      field: '',
      message: /a document of more than 16777216 characters/,
    });
  });

  it('a Prefilter list file over the size limit is refused without being read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-limits-'));
    try {
      const manifest = join(dir, 'prefilter.yaml');
      // Sparse: 64 MiB + 1 byte on paper, nothing on disk.
      writeFileSync(join(dir, 'list.txt'), '');
      truncateSync(join(dir, 'list.txt'), INPUT_LIMITS.fileBytes + 1);
      const text =
        'apiVersion: switchyard.dev/v1alpha1\nkind: Prefilter\nmetadata:\n  name: big\nspec:\n  file: list.txt\n';
      const { issues } = validateManifestTexts([{ file: manifest, text }]);
      expectIssue(issues, {
        file: manifest,
        line: 6,
        kind: 'Prefilter',
        object: 'big',
        field: 'spec.file',
        message: /list\.txt is 67108865 bytes, more than the limit of 67108864/,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('scalars as kubectl reads them (YAML 1.1)', () => {
  it('refuses an octal-looking port, naming file, line, object and field and what kubectl reads', () => {
    const text = policy(`  podSelector: {}
  ingress:
    - ports:
        - port: 0120
`);
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '0120'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].port',
      message: /'0120' is 120 in YAML 1\.2 but octal 80 for kubectl \(YAML 1\.1\): write 80/,
    });
  });

  it.each(['yes', 'no', 'on', 'off', 'Y', 'N'])('refuses an unquoted %s, and accepts it quoted', (word) => {
    const text = namespaceWithLabels(`\n    flag: ${word}`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 6,
      kind: 'Namespace',
      object: 'shop',
      field: 'metadata.labels.flag',
      message: new RegExp(
        `'${word}' is the string "${word}" in YAML 1\\.2 but the boolean (true|false) for kubectl`,
      ),
    });
    expect(validate(namespaceWithLabels(`\n    flag: "${word}"`)).issues).toEqual([]);
  });

  it('refuses 1_000 and 0b101, which YAML 1.1 reads as numbers; plain 80, true and 0x50 are read alike', () => {
    const issues = validate(
      policy(`  podSelector: {}
  ingress:
    - ports:
        - port: 1_000
        - port: 0b101
`),
    ).issues;
    expect(issues.map((i) => i.field)).toEqual([
      'spec.ingress[0].ports[0].port',
      'spec.ingress[0].ports[1].port',
    ]);
    const { model } = validate(
      policy(`  podSelector: {}
  ingress:
    - ports:
        - port: 80
        - port: 0x50
`),
    );
    expect(model).toBeDefined();
  });
});

describe('NetworkPolicy as the API server validates and defaults it', () => {
  it('rejects more than two policyTypes', () => {
    const text = policy(`  podSelector: {}
  policyTypes: [Ingress, Egress, Ingress]
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'policyTypes'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.policyTypes',
      message: /may not specify more than two policyTypes/,
    });
  });

  it('accepts a missing podSelector as {}: every pod of the namespace', () => {
    const { model, issues } = validate(
      policy(`  policyTypes: [Ingress]
`),
    );
    expect(issues).toEqual([]);
    const np = (model as { networkPolicies: { podSelector: unknown }[] }).networkPolicies[0];
    expect(np?.podSelector).toEqual({ matchLabels: {}, matchExpressions: [] });
  });
});

describe('Prefilter lists are stored as the agents read them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sy-limits-pf-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('bare addresses become /32 and /128, host bits are cleared, and the stored object validates', () => {
    writeFileSync(join(dir, 'list.txt'), '198.18.202.17\n198.18.201.5/24\nfd00:5957::1\n');
    const manifest = join(dir, 'prefilter.yaml');
    const text =
      'apiVersion: switchyard.dev/v1alpha1\nkind: Prefilter\nmetadata:\n  name: blocklist\nspec:\n  file: list.txt\n';
    const { model, issues } = validateManifestTexts([{ file: manifest, text }]);
    expect(issues).toEqual([]);
    const cidrs = (model as { prefilters: { cidrs: string[] }[] }).prefilters[0]?.cidrs;
    expect(cidrs).toEqual(['198.18.202.17/32', '198.18.201.0/24', 'fd00:5957::1/128']);
    // What `apply` stores (the CIDRs inline) is valid input again: agents can read it back.
    const stored = JSON.stringify({
      apiVersion: 'switchyard.dev/v1alpha1',
      kind: 'Prefilter',
      metadata: { name: 'blocklist' },
      spec: { cidrs },
    });
    const key = objectKey({ kind: 'Prefilter', name: 'blocklist' });
    expect(validateManifestDocuments([storedDocument(key, stored)]).issues).toEqual([]);
  });
});

describe('stored values are checked against their keys', () => {
  const podJson = JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'default' },
  });
  const policyKey = objectKey({ kind: 'NetworkPolicy', namespace: 'default', name: 'web' });

  it('a Pod stored under a NetworkPolicy key is an issue naming the key', () => {
    const { model, issues } = validateManifestDocuments([storedDocument(policyKey, podJson)]);
    expect(model).toBeUndefined();
    expectIssue(issues, {
      file: `etcd:${policyKey}`,
      line: 1,
      kind: 'Pod',
      object: 'default/web',
      field: 'kind',
      message: /the key holds NetworkPolicy default\/web but the stored object is Pod default\/web/,
    });
  });

  const storeWith = (key: string, value: string): EtcdStore => {
    const snapshot: Snapshot = {
      revision: 7,
      sequence: 1,
      cluster: {},
      objects: new Map([[key, { key, value, modRevision: 7 }]]),
    };
    return { snapshot: () => Promise.resolve(snapshot) } as unknown as EtcdStore;
  };

  it('get: a non-JSON value is an error naming the key, with a short excerpt', async () => {
    const junk = `{"kind": ${'x'.repeat(10_000)}`;
    const err = await listObjects(storeWith(policyKey, junk), { kind: 'NetworkPolicy' }).catch(
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(`etcd key ${policyKey}: not JSON`);
    expect((err as Error).message.length).toBeLessThan(300);
  });

  it('get: a Pod under a NetworkPolicy key is an error naming the key', async () => {
    const err = await listObjects(storeWith(policyKey, podJson), { kind: 'NetworkPolicy' }).catch(
      (e: Error) => e,
    );
    expect((err as Error).message).toBe(
      `etcd key ${policyKey}: the key holds NetworkPolicy default/web but the stored object is Pod default/web`,
    );
  });
});
