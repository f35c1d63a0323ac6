/**
 * The manifest cache's per-document reuse: a file changed in one document converts that document
 * alone, and what it gives is what converting the whole file gives; anything it cannot map one to
 * one (documents moved, an issue, directives) is converted whole.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManifestCache } from '../../src/agent/manifest-cache.js';
import { convertManifestFile, type ConvertedDocuments, type ConvertedFile } from '../../src/model/index.js';

function podDoc(name: string, app: string): string {
  return (
    `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: shop\n  labels: { app: ${app} }\n` +
    `spec:\n  nodeName: node-1\n`
  );
}

function fileText(apps: readonly string[], head = ''): string {
  return head + apps.map((app, i) => podDoc(`p${i}`, app)).join('---\n');
}

/** What the cache's objects say, as converting the whole file says it. */
function shape(c: ConvertedDocuments): unknown {
  return {
    issues: c.issues,
    objects: c.objects.map((o) => ({
      file: o.file,
      kind: o.kind,
      object: o.object,
      value: o.value,
      line: o.lineOf([]),
      labelsLine: o.lineOf(['metadata', 'labels']),
    })),
  };
}

let dir: string;
let file: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sy-mdocs-'));
  file = join(dir, 'pods.yaml');
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `text` and reads it through `cache` (a new inode: the cache reads it again). */
function readAs(cache: ManifestCache, text: string): ConvertedFile {
  rmSync(file, { force: true });
  writeFileSync(file, text);
  return cache.read([file]).parts[0] as ConvertedFile;
}

describe('ManifestCache per-document reuse', () => {
  it('converts the changed document alone, and gives what converting the whole file gives', () => {
    const cache = new ManifestCache();
    const apps = ['a0', 'a1', 'a2', 'a3', 'a4', 'a5'];
    const first = readAs(cache, fileText(apps));
    apps[3] = 'a9';
    const second = readAs(cache, fileText(apps));
    expect(cache.stats).toMatchObject({ parses: 2, partial: 1 });
    expect(shape(second)).toEqual(shape(convertManifestFile(file)));
    expect(second.objects[3]?.value).toMatchObject({ labels: { app: 'a9' } });
    // The other model objects are the very ones read before.
    for (const i of [0, 1, 2, 4, 5]) expect(second.values[i]).toBe(first.values[i]);
    expect(second.values[3]).not.toBe(first.values[3]);
    // And again, from the index the partial conversion left.
    apps[0] = 'a8';
    const third = readAs(cache, fileText(apps));
    expect(cache.stats.partial).toBe(2);
    expect(shape(third)).toEqual(shape(convertManifestFile(file)));
  });

  it('converts the whole file when documents move to other lines or are added', () => {
    const cache = new ManifestCache();
    readAs(cache, fileText(['a0', 'a1', 'a2']));
    const moved = readAs(cache, fileText(['a0', 'a1', 'a2'], '# a comment line moves every document\n'));
    const added = readAs(cache, fileText(['a0', 'a1', 'a2', 'a3']));
    expect(cache.stats).toMatchObject({ parses: 3, partial: 0 });
    expect(added.objects).toHaveLength(4);
    expect(shape(added)).toEqual(shape(convertManifestFile(file)));
    expect(moved.objects).toHaveLength(3);
  });

  it('reports an invalid changed document as converting the whole file does (file, line, field)', () => {
    const cache = new ManifestCache();
    readAs(cache, fileText(['a0', 'a1', 'a2']));
    const bad = fileText(['a0', 'a1', 'a2']).replace('  name: p1\n', '  name: p1\n  bogus: 1\n');
    // Same number of lines before the second document's end: only its text changed.
    const withIssue = readAs(
      cache,
      bad.replace('spec:\n  nodeName: node-1\n---', 'spec: { nodeName: node-1 }\n---'),
    );
    expect(cache.stats.partial).toBe(0);
    expect(withIssue.issues.length).toBeGreaterThan(0);
    expect(withIssue.issues).toEqual(convertManifestFile(file).issues);
  });

  it('keeps no document index for files with YAML directives', () => {
    const cache = new ManifestCache();
    const head = '%YAML 1.2\n---\n';
    readAs(cache, fileText(['a0', 'a1'], head));
    const changed = readAs(cache, fileText(['a0', 'a5'], head));
    expect(cache.stats).toMatchObject({ parses: 2, partial: 0 });
    expect(shape(changed)).toEqual(shape(convertManifestFile(file)));
  });
});
