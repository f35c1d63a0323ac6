/** DirectorySource: a watched directory of manifests (or a compiled desired.json) as desired state. */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SourceError, type DesiredState } from '../../src/agent/desired.js';
import { ALLOCATIONS_FILE, DirectorySource } from '../../src/agent/dir-source.js';
import {
  modelOf,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  toYaml,
  type Manifest,
  compileIR,
} from '../support/manifests.js';

const BASE: Manifest[] = [
  namespace('shop'),
  pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1' }),
  pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2' }),
];

function allowWeb(port: number): Manifest {
  return networkPolicy('shop', 'db-allow-web', {
    podSelector: { matchLabels: { app: 'db' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port }] }],
  });
}

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sy-dirsource-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function sourceError(source: DirectorySource): Promise<SourceError> {
  const e: unknown = await source.read().then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(SourceError);
  return e as SourceError;
}

describe('DirectorySource: manifests', () => {
  it('describes itself as dir:<path>', () => {
    expect(new DirectorySource(dir).description).toBe(`dir:${dir}`);
  });

  it('turns the YAML manifests into the model and the IR, on two nodes by default', async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    writeFileSync(join(dir, 'policy.yml'), toYaml([allowWeb(5432)]));
    const state = await new DirectorySource(dir).read();
    expect(state.revision).toMatch(/^[0-9a-f]{16}$/);
    expect(state.model?.pods.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['shop/db', 'shop/web']);
    expect(state.model?.networkPolicies.map((p) => p.name)).toEqual(['db-allow-web']);
    expect(state.ir.version).toBe(1);
    expect(state.ir.nodes.map((n) => n.name)).toEqual(['node-1', 'node-2']);
    expect(state.ir.endpoints.map((e) => e.id).sort()).toEqual(['shop/db', 'shop/web']);
    const dbIngress = state.ir.ruleSets.find((r) => r.endpoint === 'shop/db' && r.direction === 'ingress');
    expect(dbIngress?.kubernetesRules.map((r) => r.id)).toEqual(['np:shop/db-allow-web/ingress/0']);
    expect(dbIngress?.kubernetesDefault).toBe('deny');
  });

  it("builds only the agent's node's rule sets when given its node, keeping every endpoint", async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    writeFileSync(join(dir, 'policy.yml'), toYaml([allowWeb(5432)]));
    const whole = await new DirectorySource(dir).read();
    const node = whole.ir.endpoints.find((e) => e.id === 'shop/db')?.node as string;
    const state = await new DirectorySource(dir, { node }).read();
    expect(state.revision).toBe(whole.revision);
    expect(state.ir.endpoints).toEqual(whole.ir.endpoints);
    expect(state.ir.ruleSets.map((r) => `${r.endpoint} ${r.direction}`)).toEqual([
      'shop/db egress',
      'shop/db ingress',
    ]);
    expect(state.ir.ruleSets).toEqual(whole.ir.ruleSets.filter((r) => r.endpoint === 'shop/db'));
    expect(state.ir.ipSets).toEqual(whole.ir.ipSets);
  });

  it('spreads pods over nodeCount nodes when asked', async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    const state = await new DirectorySource(dir, { nodeCount: 3 }).read();
    expect(state.ir.nodes.map((n) => n.name)).toEqual(['node-1', 'node-2', 'node-3']);
  });

  it('keeps the allocations in its state directory: addresses survive updates and restarts', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'sy-dirsource-state-'));
    try {
      writeFileSync(
        join(dir, 'pods.yaml'),
        toYaml([namespace('shop'), pod('shop', 'web'), pod('shop', 'db')]),
      );
      const first = await new DirectorySource(dir, { stateDir }).read();
      const addressesOf = (s: DesiredState): Record<string, string[]> =>
        Object.fromEntries(s.ir.endpoints.map((e) => [e.id, e.addresses]));
      const before = addressesOf(first);
      expect(JSON.parse(readFileSync(join(stateDir, ALLOCATIONS_FILE), 'utf8'))).toMatchObject({
        podAddresses: { 'shop/web': before['shop/web']?.[0], 'shop/db': before['shop/db']?.[0] },
      });
      // `shop/api` sorts first: allocated afresh it would take db's address.
      writeFileSync(
        join(dir, 'pods.yaml'),
        toYaml([namespace('shop'), pod('shop', 'api'), pod('shop', 'web'), pod('shop', 'db')]),
      );
      const restarted = addressesOf(await new DirectorySource(dir, { stateDir }).read());
      expect(restarted['shop/web']).toEqual(before['shop/web']);
      expect(restarted['shop/db']).toEqual(before['shop/db']);
      const fresh = addressesOf(await new DirectorySource(dir).read());
      expect(fresh['shop/db']).not.toEqual(before['shop/db']);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('takes the allocations it finds in its state directory', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'sy-dirsource-state-'));
    try {
      writeFileSync(
        join(dir, 'pods.yaml'),
        toYaml([namespace('shop'), pod('shop', 'web'), pod('shop', 'db', { node: 'node-2' })]),
      );
      writeFileSync(
        join(stateDir, ALLOCATIONS_FILE),
        JSON.stringify({ podAddresses: { 'shop/web': '198.18.77.7' } }),
      );
      const pinned = await new DirectorySource(dir, { stateDir }).read();
      expect(pinned.ir.endpoints.find((e) => e.id === 'shop/web')?.addresses).toEqual(['198.18.77.7']);
      // Unreadable allocations are no allocations: allocated afresh.
      writeFileSync(join(stateDir, ALLOCATIONS_FILE), '{not json');
      const fresh = await new DirectorySource(dir, { stateDir }).read();
      expect(fresh.ir.endpoints.find((e) => e.id === 'shop/web')?.addresses).not.toEqual(['198.18.77.7']);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('keeps the revision while nothing changes, and changes it when a file does', async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(5432)]));
    const source = new DirectorySource(dir);
    const r1 = (await source.read()).revision;
    expect((await source.read()).revision).toBe(r1);

    // The same content written again, and files that are not manifests, change nothing.
    writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(5432)]));
    writeFileSync(join(dir, 'README.txt'), 'notes\n');
    writeFileSync(join(dir, '.hidden.yaml'), 'not: [valid');
    expect((await source.read()).revision).toBe(r1);

    writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(5433)]));
    const r2 = (await source.read()).revision;
    expect(r2).not.toBe(r1);

    // Back to the first content: the first revision again (content, not time).
    writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(5432)]));
    expect((await source.read()).revision).toBe(r1);

    // A file added or renamed is a change.
    writeFileSync(join(dir, 'more.yaml'), toYaml([namespace('other')]));
    const r3 = (await source.read()).revision;
    expect(new Set([r1, r2, r3]).size).toBe(3);
    rmSync(join(dir, 'more.yaml'));
    writeFileSync(join(dir, 'zz-more.yaml'), toYaml([namespace('other')]));
    expect((await source.read()).revision).not.toBe(r3);
  });

  it('refuses invalid manifests with a SourceError naming the file', async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    writeFileSync(
      join(dir, 'broken.yaml'),
      toYaml([
        networkPolicy('shop', 'bad', {
          podSelector: { matchLabels: { app: 'db' } },
          ingress: [{ ports: [{ port: 70000 }] }],
        }),
      ]),
    );
    const e = await sourceError(new DirectorySource(dir));
    expect(e.message).toMatch(/^invalid manifests:/);
    expect(e.message).toContain(join(dir, 'broken.yaml'));
    expect(e.message).not.toContain('pods.yaml');
  });

  it('refuses YAML that does not parse, naming the file', async () => {
    writeFileSync(join(dir, 'bad.yaml'), 'kind: Pod\nmetadata: { name: [unclosed\n');
    const e = await sourceError(new DirectorySource(dir));
    expect(e.message).toContain('bad.yaml');
  });

  it('refuses an empty directory, and one without manifests', async () => {
    const source = new DirectorySource(dir);
    expect((await sourceError(source)).message).toMatch(/no manifests/);
    writeFileSync(join(dir, 'README.md'), '# nothing\n');
    expect((await sourceError(source)).message).toMatch(/no manifests/);
  });

  it('refuses a directory that does not exist', async () => {
    const e = await sourceError(new DirectorySource(join(dir, 'missing')));
    expect(e.message).toContain(join(dir, 'missing'));
  });
});

describe('DirectorySource: incremental reads', () => {
  /** Written by rename, as editors and `lab apply` do. */
  const put = (name: string, manifests: readonly Manifest[]): void => {
    writeFileSync(join(dir, `${name}.tmp`), toYaml(manifests));
    renameSync(join(dir, `${name}.tmp`), join(dir, name));
  };
  /** What a source reading the directory from scratch builds. */
  const fresh = (opts: { node?: string } = {}): Promise<DesiredState> =>
    new DirectorySource(dir, opts).read();

  function writeThree(): void {
    put('a.yaml', BASE);
    put('b.yaml', [namespace('ops'), pod('ops', 'mon', { labels: { app: 'mon' }, ip: '198.18.1.3' })]);
    put('c.yaml', [allowWeb(5432)]);
  }

  it('parses only the file that changed and hands the calculation its changes: the IR equals a full read', async () => {
    writeThree();
    const source = new DirectorySource(dir);
    const first = await source.read();
    expect(source.stats).toMatchObject({ parses: 3, fullBuilds: 1, incrementalBuilds: 0 });
    // web relabelled: no longer allowed to db.
    put('a.yaml', [
      BASE[0] as Manifest,
      pod('shop', 'web', { labels: { app: 'other' }, ip: '198.18.1.1' }),
      BASE[2] as Manifest,
    ]);
    const second = await source.read();
    expect(source.stats).toMatchObject({ parses: 4, fullBuilds: 1, incrementalBuilds: 1, modelChanges: 1 });
    expect(second.revision).not.toBe(first.revision);
    const expected = await fresh();
    expect(second.revision).toBe(expected.revision);
    expect(second.ir).toEqual(expected.ir);
    // A policy change in another file: one more parse, one more change.
    put('c.yaml', [allowWeb(6543)]);
    const third = await source.read();
    expect(source.stats).toMatchObject({ parses: 5, fullBuilds: 1, incrementalBuilds: 2, modelChanges: 2 });
    expect(third.ir).toEqual((await fresh()).ir);
  });

  it('keeps unchanged IR objects as the same objects, and the state itself when nothing changed', async () => {
    writeThree();
    const source = new DirectorySource(dir, { node: 'node-1' });
    const first = await source.read();
    // Rewritten with the same content (new inode and mtime): hashed, not parsed, same state.
    put('b.yaml', [namespace('ops'), pod('ops', 'mon', { labels: { app: 'mon' }, ip: '198.18.1.3' })]);
    expect(await source.read()).toBe(first);
    expect(source.stats.parses).toBe(3);
    put('b.yaml', [namespace('ops'), pod('ops', 'mon', { labels: { app: 'mon2' }, ip: '198.18.1.3' })]);
    const second = await source.read();
    expect(second.ir.ruleSets).toBe(first.ir.ruleSets);
    const byId = new Map(first.ir.endpoints.map((e) => [e.id, e]));
    for (const e of second.ir.endpoints) if (e.id !== 'ops/mon') expect(e, e.id).toBe(byId.get(e.id));
  });

  it('follows objects moved between files, files removed, and the implicit default namespace', async () => {
    writeThree();
    // The allocations kept where the reference reads them: both place pods alike.
    const stateDir = mkdtempSync(join(tmpdir(), 'sy-dirsource-state-'));
    const fresh = (): Promise<DesiredState> => new DirectorySource(dir, { stateDir }).read();
    const source = new DirectorySource(dir, { stateDir });
    await source.read();
    // mon moves from b to a (removed there, added here) and b is gone.
    put('a.yaml', [
      ...BASE,
      namespace('ops'),
      pod('ops', 'mon', { labels: { app: 'mon' }, ip: '198.18.1.3' }),
    ]);
    rmSync(join(dir, 'b.yaml'));
    expect((await source.read()).ir).toEqual((await fresh()).ir);
    // An explicit default namespace with labels, then gone again (the implicit one comes back).
    put('d.yaml', [namespace('default', { tier: 'x' }), pod('default', 'dflt', { labels: { app: 'web' } })]);
    expect((await source.read()).ir).toEqual((await fresh()).ir);
    put('d.yaml', [pod('default', 'dflt', { labels: { app: 'web' } })]);
    const last = await source.read();
    expect(last.model?.namespaces.find((n) => n.name === 'default')?.labels).toEqual(
      (await fresh()).model?.namespaces.find((n) => n.name === 'default')?.labels,
    );
    expect(last.ir).toEqual((await fresh()).ir);
    expect(source.stats.fullBuilds).toBe(1);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('reports an invalid change with the file and line, and goes on incrementally from the last valid state', async () => {
    writeThree();
    const source = new DirectorySource(dir);
    await source.read();
    // A duplicate of a pod in another file: only the check across objects finds it.
    put('b.yaml', [namespace('ops'), pod('shop', 'web', { labels: { app: 'x' } })]);
    const e = await sourceError(source);
    expect(e.message).toMatch(
      /b\.yaml:\d+: Pod shop\/web: metadata\.name: duplicate Pod 'shop\/web' \(first defined at .*a\.yaml:\d+\)/,
    );
    put('b.yaml', [namespace('ops'), pod('ops', 'mon2', { labels: { app: 'mon' }, ip: '198.18.1.4' })]);
    expect((await source.read()).ir).toEqual((await fresh()).ir);
    expect(source.stats).toMatchObject({ fullBuilds: 1, incrementalBuilds: 1 });
  });

  it('parses a Prefilter again when the list file it names changes', async () => {
    writeFileSync(join(dir, 'deny.txt'), '198.19.200.0/24\n');
    put('a.yaml', [...BASE, prefilter('edge', { file: 'deny.txt' })]);
    const source = new DirectorySource(dir);
    const first = await source.read();
    writeFileSync(join(dir, 'deny.txt'), '198.19.200.0/24\n198.19.210.0/24\n');
    const second = await source.read();
    expect(second.ir.ipSets.find((s) => s.id === second.ir.prefilters[0]?.set)?.cidrs).toEqual([
      '198.19.200.0/24',
      '198.19.210.0/24',
    ]);
    expect(second.revision).not.toBe(first.revision);
  });
});

describe('DirectorySource: desired.json', () => {
  it('takes a compiled desired state as is, ahead of any manifests', async () => {
    const model = modelOf([...BASE, allowWeb(5432)]);
    const ir = compileIR(model);
    const desired: DesiredState = {
      revision: 'lab-7',
      ir,
      model,
      cgroups: { 'shop/web': '/sys/fs/cgroup/sy/web' },
    };
    writeFileSync(join(dir, 'desired.json'), JSON.stringify(desired));
    writeFileSync(join(dir, 'pods.yaml'), toYaml([namespace('elsewhere')]));
    const state = await new DirectorySource(dir).read();
    expect(state).toEqual(JSON.parse(JSON.stringify(desired)));
    expect(state.revision).toBe('lab-7');
  });

  it('refuses a desired.json that is not JSON, or not {revision, ir} of version 1', async () => {
    const source = new DirectorySource(dir);
    const path = join(dir, 'desired.json');
    writeFileSync(path, '{ nope');
    let e = await sourceError(source);
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/not valid JSON/);

    const ir = compileIR(modelOf(BASE));
    writeFileSync(path, JSON.stringify({ ir }));
    e = await sourceError(source);
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/revision/);

    writeFileSync(path, JSON.stringify({ revision: 'r1', ir: { ...ir, version: 2 } }));
    expect((await sourceError(source)).message).toContain(path);

    writeFileSync(path, JSON.stringify({ revision: 'r1' }));
    expect((await sourceError(source)).message).toContain(path);
  });
});

describe('DirectorySource: watch', () => {
  it('calls back after a file is written, and not after stop', async () => {
    writeFileSync(join(dir, 'pods.yaml'), toYaml(BASE));
    const source = new DirectorySource(dir);
    let calls = 0;
    const stop = source.watch(() => calls++);
    try {
      // Nothing happens on its own (the poll sees the same listing).
      await new Promise((r) => setTimeout(r, 1300));
      expect(calls).toBe(0);
      writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(5432)]));
      await vi.waitFor(() => expect(calls).toBeGreaterThan(0), { timeout: 3000, interval: 20 });
    } finally {
      stop();
    }
    // Let in-flight events settle, then nothing more may arrive.
    await new Promise((r) => setTimeout(r, 100));
    const after = calls;
    writeFileSync(join(dir, 'policy.yaml'), toYaml([allowWeb(9999)]));
    writeFileSync(join(dir, 'desired.json'), '{}');
    await new Promise((r) => setTimeout(r, 1500));
    expect(calls).toBe(after);
  });

  it('notices a desired.json renamed into place (as the lab writes it)', async () => {
    const staging = mkdtempSync(join(tmpdir(), 'sy-dirsource-staging-'));
    const source = new DirectorySource(dir);
    let calls = 0;
    const stop = source.watch(() => calls++);
    try {
      const ir = compileIR(modelOf(BASE));
      writeFileSync(join(staging, 'desired.json'), JSON.stringify({ revision: 'r9', ir }));
      expect(calls).toBe(0);
      renameSync(join(staging, 'desired.json'), join(dir, 'desired.json'));
      await vi.waitFor(() => expect(calls).toBeGreaterThan(0), { timeout: 3000, interval: 20 });
      expect((await source.read()).revision).toBe('r9');
    } finally {
      stop();
      rmSync(staging, { recursive: true, force: true });
    }
  });
});
