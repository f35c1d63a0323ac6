/**
 * What an agent keeps of a manifest file is its model objects, never the file's text: a string
 * taken from the text (a name, a label value) must not be a V8 slice that keeps the whole text
 * alive (docs/agent.md, "Memory budget").
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertDocuments, convertManifestFile, readManifestDocuments } from '../../src/model/index.js';
import { objectsOfClass, settle, stringCopies } from '../support/heap-snapshot.js';

const dir = mkdtempSync(join(tmpdir(), 'sy-model-memory-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Heap used after full collections (bytes), once the compile jobs V8 runs beside the code are done
 * (what they allocate is not the files').
 */
async function heapUsed(): Promise<number> {
  await settle();
  return process.memoryUsage().heapUsed;
}

describe('converted manifests', () => {
  it('keep no part of the file text alive (names and labels are copies, not slices of it)', async () => {
    const pods = 40;
    const comment = `# ${'x'.repeat(200)}\n`.repeat(1000); // ~200 KB of text no object needs
    const files = Array.from({ length: pods }, (_, i) => {
      const file = join(dir, `pod${i}.yaml`);
      writeFileSync(
        file,
        comment +
          `apiVersion: v1\nkind: Pod\nmetadata:\n  name: a-long-pod-name-${i}\n  namespace: a-long-namespace\n` +
          `  labels: { app: a-long-label-value-${i} }\nspec:\n  nodeName: node-1\n` +
          `  containers: [{ name: c, ports: [{ containerPort: 8080, protocol: TCP }] }]\n` +
          `status: { podIP: 198.18.100.${i + 1} }\n`,
      );
      return file;
    });
    convertManifestFile(files[0] as string); // what the first conversion compiles is not the files'
    const before = await heapUsed();
    const kept = files.map((f) => convertManifestFile(f));
    const retained = (await heapUsed()) - before;
    expect(kept.every((k) => k.objects.length === 1 && k.issues.length === 0)).toBe(true);
    // 40 texts of ~200 KB would be 8 MB; the 40 pods themselves are a few KB each.
    expect(retained).toBeLessThan(pods * 20_000);
  });

  it('name the file, object and lines the conversion named, without keeping them twice', () => {
    const file = join(dir, 'every-kind.yaml');
    const long = 'n'.repeat(100); // a name over the excerpt's length
    writeFileSync(
      file,
      [
        `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-a\n  labels: { team: a }`,
        `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${long}\n  namespace: ns-a\n  labels: { app: a }\nspec:\n  nodeName: node-1\n  containers: [{ name: c }]`,
        `apiVersion: v1\nkind: Pod\nmetadata:\n  name: in-default\nspec:\n  containers: [{ name: c }]`,
        `apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n  namespace: ns-a\nspec:\n  selector: { app: a }\n  ports: [{ port: 80 }]`,
        `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: ns-a\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]`,
      ].join('\n---\n') + '\n',
    );
    const direct = convertDocuments(readManifestDocuments(file).documents);
    const kept = convertManifestFile(file);
    expect(direct.issues).toEqual([]);
    expect(kept.objects).toHaveLength(5);
    const where = (o: (typeof kept.objects)[number]) => ({
      file: o.file,
      kind: o.kind,
      object: o.object,
      line: o.lineOf([]),
      nameLine: o.lineOf(['metadata', 'name']),
    });
    expect(kept.objects.map(where)).toEqual(direct.objects.map(where));
    expect(kept.objects.map((o) => o.object)).toContain('default/in-default');
  });

  it('keep the model objects of a file and their kind, no wrapper per object', async () => {
    const pods = 500;
    const file = join(dir, 'many-pods.yaml');
    writeFileSync(
      file,
      Array.from(
        { length: pods },
        (_, i) =>
          `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p${i}\n  namespace: ns-a\n  labels: { app: a }\n` +
          `spec:\n  nodeName: node-1\n  containers: [{ name: c }]\nstatus: { podIP: 198.18.${Math.floor(i / 250)}.${(i % 250) + 1} }`,
      ).join('\n---\n') + '\n',
    );
    const kept = convertManifestFile(file);
    expect(kept.values).toHaveLength(pods);
    // A wrapper (kind, value, document) kept for each object was 48 bytes each, 1.5 MiB at 10k
    // endpoints: they are made when asked, for the pass that asks.
    expect(await objectsOfClass('FileObject')).toBe(0);
    const objects = kept.objects;
    expect(objects.map((o) => [o.kind, o.object, o.lineOf([])])).toEqual(
      kept.values.map((_, i) => ['Pod', `ns-a/p${i}`, 1 + 11 * i]),
    );
    // A field's line: the file is read again, and the object's document is the one on its line.
    expect(objects[7]?.lineOf(['metadata', 'name'])).toBe(1 + 11 * 7 + 3);
    expect(await objectsOfClass('FileObject')).toBe(pods);
  });

  it('share namespace and node names across files: one copy of each for the process', async () => {
    // Made at run time: a literal would be one more copy, the test's own.
    const name = (what: string): string => ['names', 'shared', what].join('-');
    const files = Array.from({ length: 30 }, (_, i) => {
      const file = join(dir, `svc-${i}.yaml`);
      writeFileSync(
        file,
        `apiVersion: v1\nkind: Service\nmetadata:\n  name: s${i}\n  namespace: names-shared-ns\n` +
          `spec:\n  ports: [{ port: 80 }]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p${i}\n` +
          `  namespace: names-shared-ns\nspec:\n  nodeName: names-shared-node\n  containers: [{ name: c }]\n`,
      );
      return file;
    });
    const kept = files.map((f) => convertManifestFile(f));
    expect(kept.every((k) => k.values.length === 2 && k.issues.length === 0)).toBe(true);
    // One file a Service kept a copy of its namespace each (and one a pod, of its node).
    const copies = await stringCopies(() => [name('ns'), name('node')]);
    expect([...copies.values()]).toEqual([1, 1]);
  });
});
