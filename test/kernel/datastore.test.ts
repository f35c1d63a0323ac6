/**
 * The etcd datastore against a real etcd: apply/get/delete keep what they promise (allocations
 * stored and kept, validation with what is stored, all or nothing, prune), concurrent writers
 * lose nothing, the CLI reports what it did and why it failed, and the agent's EtcdSource lists,
 * watches, resumes from its cache after a restart, relists after compaction and rides out an
 * etcd SIGKILL.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdSource } from '../../src/agent/etcd-source.js';
import type { DesiredState } from '../../src/agent/desired.js';
import { applyManifests, deleteObjects, type WriteResult } from '../../src/datastore/apply.js';
import { DatastoreError, EtcdStore } from '../../src/datastore/etcd.js';
import { PREFIX } from '../../src/datastore/keys.js';
import { listObjects } from '../../src/datastore/read.js';
import { killEtcd, restartEtcd, startEtcd, type EtcdInfo } from '../../src/lab/etcd.js';
import { labDir } from '../../src/lab/state.js';
import { ManifestError } from '../../src/model/index.js';
import { cidrContains, parseAddress, parseCidr, type Cidr } from '../../src/util/ip.js';
import { describeKernel } from '../support/kernel.js';

const LAB = `dst${randomBytes(2).toString('hex')}`;
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(REPO, 'bin', 'switchyard');
const WALKTHROUGH = join(REPO, 'examples', 'walkthrough');
const POD_RANGE = parseCidr('198.18.0.0/16') as Cidr;
const SERVICE_RANGE = parseCidr('198.19.0.0/16') as Cidr;

let etcd: EtcdInfo;
let store: EtcdStore;
const stores: EtcdStore[] = [];
const tmpDirs: string[] = [];
const stops: (() => void)[] = [];

function inRange(range: Cidr, ip: unknown): boolean {
  const a = typeof ip === 'string' ? parseAddress(ip) : undefined;
  return a !== undefined && cidrContains(range, a);
}

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sy-dst-'));
  tmpDirs.push(dir);
  return dir;
}

/** Writes `files` (name → YAML) into a fresh directory; returns the directory. */
function manifests(files: Record<string, string>): string {
  const dir = tmp();
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

function ns(name: string, labels: Record<string, string> = {}): string {
  return `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n  labels: ${JSON.stringify(labels)}\n`;
}

function pod(namespace: string, name: string, labels: Record<string, string> = { app: name }): string {
  return [
    'apiVersion: v1',
    'kind: Pod',
    'metadata:',
    `  name: ${name}`,
    `  namespace: ${namespace}`,
    `  labels: ${JSON.stringify(labels)}`,
    'spec:',
    '  containers:',
    '    - name: main',
    '      ports: [{ name: http, containerPort: 80 }]',
    '',
  ].join('\n');
}

function service(namespace: string, name: string, app: string): string {
  return [
    'apiVersion: v1',
    'kind: Service',
    'metadata:',
    `  name: ${name}`,
    `  namespace: ${namespace}`,
    'spec:',
    `  selector: { app: ${app} }`,
    '  ports: [{ port: 80, targetPort: http }]',
    '',
  ].join('\n');
}

function policy(namespace: string, name: string, spec: string): string {
  return `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${namespace}\nspec:\n${spec}`;
}

const docs = (...d: string[]): string => d.join('---\n');

/** A plain etcd3 client of the test's etcd, with the lab's client certificate. */
function rawClient(): Etcd3 {
  return new Etcd3({
    hosts: etcd.clientUrl,
    credentials: {
      rootCertificate: readFileSync(etcd.tls.ca),
      certChain: readFileSync(etcd.tls.cert),
      privateKey: readFileSync(etcd.tls.key),
    },
    // As EtcdStore does: the member certificate names localhost (an IP as TLS server name is deprecated).
    grpcOptions: { 'grpc.ssl_target_name_override': 'localhost' },
  });
}

/** Removes every object and setting: each test starts from an empty store (revisions go on). */
async function wipe(): Promise<void> {
  const client = rawClient();
  try {
    await client.delete().prefix(PREFIX).exec();
  } finally {
    client.close();
  }
}

async function objects(kind: string, namespace?: string): Promise<Record<string, Record<string, unknown>>> {
  const { items } = await listObjects(store, { kind, ...(namespace ? { namespace } : {}) });
  return Object.fromEntries(items.map((i) => [`${i.ref.namespace ?? ''}/${i.ref.name}`, i.object]));
}

type Obj = {
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
};

async function podIPs(namespace?: string): Promise<Record<string, string>> {
  const pods = await objects('Pod', namespace);
  return Object.fromEntries(Object.entries(pods).map(([k, o]) => [k, (o as Obj).status?.podIP as string]));
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection, but it resolved');
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, SWITCHYARD_ETCD: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

describeKernel('etcd datastore: apply, get, delete and the agent source against a real etcd', () => {
  beforeAll(async () => {
    mkdirSync(labDir(LAB), { recursive: true });
    etcd = await startEtcd(LAB);
    store = new EtcdStore(etcd.clientUrl, etcd.tls);
    stores.push(store);
  });

  afterAll(async () => {
    for (const stop of stops) stop();
    for (const s of stores) s.close();
    await killEtcd(LAB, 'SIGKILL').catch(() => undefined);
    rmSync(labDir(LAB), { recursive: true, force: true });
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  });

  it('apply → get: allocations are stored, a re-apply changes nothing, and a pod keeps its address', async () => {
    await wipe();
    const dir = tmp();
    cpSync(WALKTHROUGH, dir, { recursive: true });
    writeFileSync(
      join(dir, '30-services.yaml'),
      docs(service('shop', 'web', 'frontend'), service('shop', 'api', 'backend')),
    );

    const first = await applyManifests(store, [dir]);
    expect(first.created).toHaveLength(2 + 4 + 4 + 2);
    expect(first.configured).toEqual([]);
    expect(first.unchanged).toEqual([]);
    expect(first.attempts).toBe(1);
    expect(first.revision).toBe(await store.snapshotRevision());

    const pods = await objects('Pod');
    expect(Object.keys(pods).sort()).toEqual(['outside/client', 'shop/backend', 'shop/db', 'shop/frontend']);
    const ips = new Set<string>();
    for (const [id, o] of Object.entries(pods) as [string, Obj][]) {
      expect(o.spec?.nodeName, id).toMatch(/^node-[12]$/);
      expect(inRange(POD_RANGE, o.status?.podIP), `${id} ${String(o.status?.podIP)}`).toBe(true);
      ips.add(o.status?.podIP as string);
    }
    expect(ips.size).toBe(4);
    // Spread over the default two nodes.
    expect(new Set(Object.values(pods).map((o) => (o as Obj).spec?.nodeName)).size).toBe(2);
    const services = await objects('Service', 'shop');
    expect(Object.keys(services).sort()).toEqual(['shop/api', 'shop/web']);
    const vips = Object.values(services).map((o) => (o as Obj).spec?.clusterIP);
    for (const vip of vips) expect(inRange(SERVICE_RANGE, vip), String(vip)).toBe(true);
    expect(new Set(vips).size).toBe(2);
    expect(Object.keys(await objects('NetworkPolicy', 'shop'))).toHaveLength(4);
    expect(Object.keys(await objects('NetworkPolicy', 'outside'))).toHaveLength(0);

    // The same files again: nothing to write, so no new revision.
    const again = await applyManifests(store, [dir]);
    expect(again.unchanged).toHaveLength(first.created.length);
    expect(again.created).toEqual([]);
    expect(again.configured).toEqual([]);
    expect(again.revision).toBe(first.revision);
    expect(await store.snapshotRevision()).toBe(first.revision);

    // Remove the pod with the lowest address, then change another pod's labels (its manifest has
    // no address): it keeps its own address instead of taking the freed lower one.
    const before = await podIPs();
    const lowest = Object.entries(before).sort(([, a], [, b]) =>
      (parseAddress(a)?.value ?? 0n) < (parseAddress(b)?.value ?? 0n) ? -1 : 1,
    )[0]?.[0] as string;
    const [lowNs, lowName] = lowest.split('/') as [string, string];
    await deleteObjects(store, [{ kind: 'Pod', namespace: lowNs, name: lowName }]);
    const other = Object.keys(before).find((k) => k !== lowest && k.startsWith('shop/')) as string;
    const [otherNs, otherName] = other.split('/') as [string, string];
    const relabelled = manifests({ 'pod.yaml': pod(otherNs, otherName, { app: otherName, tier: 'new' }) });
    const re = await applyManifests(store, [relabelled]);
    expect(re.configured).toEqual([`Pod ${other}`]);
    const after = await podIPs();
    expect(after[other]).toBe(before[other]);
    expect((await objects('Pod'))[other]).toMatchObject({
      metadata: { labels: { tier: 'new' } },
      spec: { nodeName: (pods[other] as Obj).spec?.nodeName },
    });
    // And re-adding the deleted pod gives it an address nobody else has.
    await applyManifests(store, [manifests({ 'pod.yaml': pod(lowNs, lowName) })]);
    const final = await podIPs();
    expect(new Set(Object.values(final)).size).toBe(4);
  });

  it('node ports and load-balancer addresses are stored with the Service and kept on re-apply', async () => {
    await wipe();
    const external = (name: string, type: string): string =>
      service('shop', name, 'frontend').replace('spec:\n', `spec:\n  type: ${type}\n`);
    const dir = manifests({
      'ns.yaml': ns('shop'),
      'svc.yaml': docs(external('np', 'NodePort'), external('lb', 'LoadBalancer')),
    });
    await applyManifests(store, [dir]);
    const stored = await objects('Service', 'shop');
    const nodePort = (id: string): unknown =>
      ((stored[id] as Obj).spec?.ports as { nodePort?: number }[] | undefined)?.[0]?.nodePort;
    expect([nodePort('shop/lb'), nodePort('shop/np')]).toEqual([30000, 30001]);
    expect((stored['shop/lb'] as Obj).status).toEqual({
      loadBalancer: { ingress: [{ ip: '198.19.192.2' }] },
    });
    // The same files again write nothing; a new service sorting first takes the next free ones.
    const again = await applyManifests(store, [dir]);
    expect(again.unchanged).toHaveLength(3);
    await applyManifests(store, [manifests({ 'svc.yaml': external('aaa', 'LoadBalancer') })]);
    const after = await objects('Service', 'shop');
    expect((after['shop/aaa'] as Obj).spec?.ports).toEqual([
      { port: 80, targetPort: 'http', nodePort: 30002 },
    ]);
    expect((after['shop/aaa'] as Obj).status).toEqual({
      loadBalancer: { ingress: [{ ip: '198.19.192.3' }] },
    });
    expect(after['shop/lb']).toEqual(stored['shop/lb']);
    expect(after['shop/np']).toEqual(stored['shop/np']);
  });

  it('validates the files with what is stored, and a rejected apply writes nothing', async () => {
    await wipe();
    await applyManifests(store, [manifests({ 'ns.yaml': docs(ns('stored'), pod('stored', 'old')) })]);
    const revision = await store.snapshotRevision();

    // The namespace exists only in etcd: the pod is still valid.
    const ok = await applyManifests(store, [manifests({ 'pod.yaml': pod('stored', 'newcomer') })]);
    expect(ok.created).toEqual(['Pod stored/newcomer']);
    expect(ok.revision).toBeGreaterThan(revision);
    const good = await store.snapshotRevision();
    const podsBefore = await podIPs();

    // A bad port in a NetworkPolicy, next to a valid pod: nothing of the two is written.
    const badDir = manifests({
      'a-pod.yaml': pod('stored', 'never'),
      'b-policy.yaml': policy(
        'stored',
        'bad-port',
        '  podSelector: {}\n  ingress:\n    - ports: [{ port: 70000 }]\n',
      ),
    });
    const bad = await rejection(applyManifests(store, [badDir]));
    expect(bad).toBeInstanceOf(ManifestError);
    expect(bad.message).toContain(join(badDir, 'b-policy.yaml'));
    expect(bad.message).toContain('NetworkPolicy stored/bad-port');
    expect(bad.message).toContain('spec.ingress[0].ports[0].port');
    expect(await store.snapshotRevision()).toBe(good);
    expect(await podIPs()).toEqual(podsBefore);
    expect(await objects('NetworkPolicy')).toEqual({});

    // An unknown field (a typo that would silently allow traffic) is an error too.
    const typoDir = manifests({
      'typo.yaml': policy('stored', 'typo', '  podSelector: {}\n  ingres:\n    - {}\n'),
    });
    const typo = await rejection(applyManifests(store, [typoDir]));
    expect(typo).toBeInstanceOf(ManifestError);
    expect(typo.message).toContain(join(typoDir, 'typo.yaml'));
    expect(typo.message).toContain('NetworkPolicy stored/typo');
    expect(typo.message).toMatch(/ingres\b/);
    expect(await store.snapshotRevision()).toBe(good);

    // A namespace that exists nowhere.
    const nowhereDir = manifests({ 'pod.yaml': pod('nowhere', 'lost') });
    const nowhere = await rejection(applyManifests(store, [nowhereDir]));
    expect(nowhere).toBeInstanceOf(ManifestError);
    expect(nowhere.message).toContain(join(nowhereDir, 'pod.yaml'));
    expect(nowhere.message).toContain('Pod nowhere/lost');
    expect(nowhere.message).toContain('metadata.namespace');
    expect(await store.snapshotRevision()).toBe(good);
    expect(Object.keys(await podIPs()).sort()).toEqual(['stored/newcomer', 'stored/old']);
  });

  it('a Prefilter file with bare addresses is stored normalised in one commit; a state agents could not read is refused before the commit', async () => {
    await wipe();
    // examples/global's blocklist.txt lists 198.18.202.17 without /32.
    const first = await applyManifests(store, [WALKTHROUGH, join(REPO, 'examples', 'global')]);
    expect(first.created).toContain('Prefilter blocklist');
    expect(await store.snapshotRevision()).toBe(first.revision);
    const prefilter = (await objects('Prefilter'))['/blocklist'] as { spec: { cidrs: string[] } };
    expect(prefilter.spec.cidrs).toEqual(['198.18.200.0/24', '198.18.201.0/24', '198.18.202.17/32']);
    // Every later apply still works (before, each failed until the prefilter was deleted).
    const later = await applyManifests(store, [manifests({ 'ns.yaml': ns('later') })]);
    expect(later.created).toEqual(['Namespace later']);

    // A Pod written (by hand) under a NetworkPolicy key: the next apply names the key and commits nothing.
    const wrongKey = `${PREFIX}objects/NetworkPolicy/shop/web`;
    const client = rawClient();
    try {
      await client
        .put(wrongKey)
        .value(JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x', namespace: 'shop' } }));
    } finally {
      client.close();
    }
    const before = await store.snapshotRevision();
    const refused = await rejection(applyManifests(store, [manifests({ 'ns.yaml': ns('refused') })]));
    expect(refused).toBeInstanceOf(ManifestError);
    expect(refused.message).toContain(`etcd:${wrongKey}`);
    expect(refused.message).toContain(
      'the key holds NetworkPolicy shop/web but the stored object is Pod shop/x',
    );
    expect(await store.snapshotRevision()).toBe(before);
    const get = await rejection(objects('NetworkPolicy'));
    expect(get.message).toContain(`etcd key ${wrongKey}`);

    // Once the stray value is gone, applies work again.
    const cleaner = rawClient();
    try {
      await cleaner.delete().key(wrongKey).exec();
    } finally {
      cleaner.close();
    }
    const after = await applyManifests(store, [manifests({ 'ns.yaml': ns('refused') })]);
    expect(after.created).toEqual(['Namespace refused']);
  });

  it('prune removes what the files do not name; a namespace in use cannot be deleted; a pod can', async () => {
    await wipe();
    await applyManifests(store, [
      manifests({
        'all.yaml': docs(
          ns('keep'),
          ns('gone'),
          pod('keep', 'a'),
          pod('keep', 'b'),
          pod('gone', 'c'),
          policy('keep', 'deny', '  podSelector: {}\n  policyTypes: [Ingress]\n'),
        ),
      }),
    ]);
    const ipA = (await podIPs())['keep/a'];

    const pruned = await applyManifests(
      store,
      [manifests({ 'keep.yaml': docs(ns('keep'), pod('keep', 'a')) })],
      {
        prune: true,
      },
    );
    expect(pruned.unchanged.sort()).toEqual(['Namespace keep', 'Pod keep/a']);
    expect(pruned.deleted.sort()).toEqual(
      ['Namespace gone', 'NetworkPolicy keep/deny', 'Pod gone/c', 'Pod keep/b'].sort(),
    );
    expect(await podIPs()).toEqual({ 'keep/a': ipA });
    expect(Object.keys(await objects('Namespace'))).toEqual(['/keep']);
    expect(await objects('NetworkPolicy')).toEqual({});

    // The namespace still holds keep/a: refused, nothing changes.
    const revision = await store.snapshotRevision();
    const refused = await rejection(deleteObjects(store, [{ kind: 'Namespace', name: 'keep' }]));
    expect(refused).toBeInstanceOf(ManifestError);
    expect(refused.message).toContain("namespace 'keep' is not defined");
    expect(await store.snapshotRevision()).toBe(revision);
    expect(Object.keys(await objects('Namespace'))).toEqual(['/keep']);

    const missing = await rejection(deleteObjects(store, [{ kind: 'Pod', namespace: 'keep', name: 'zzz' }]));
    expect(missing).toBeInstanceOf(DatastoreError);
    expect(missing.message).toContain('Pod keep/zzz');

    const deleted = await deleteObjects(store, [{ kind: 'Pod', namespace: 'keep', name: 'a' }]);
    expect(deleted.deleted).toEqual(['Pod keep/a']);
    expect(deleted.revision).toBeGreaterThan(revision);
    expect(await podIPs()).toEqual({});
    // Now the namespace is free to go.
    expect((await deleteObjects(store, [{ kind: 'Namespace', name: 'keep' }])).deleted).toEqual([
      'Namespace keep',
    ]);
  });

  it('12 concurrent writers: every apply resolves, nothing is lost, no address is given twice', async () => {
    await wipe();
    await applyManifests(store, [manifests({ 'ns.yaml': ns('race') })]);
    const n = 12;
    const dirs = Array.from({ length: n }, (_, i) => manifests({ 'pod.yaml': pod('race', `p${i}`) }));
    const writers = dirs.map((d) => {
      const s = new EtcdStore(etcd.clientUrl, etcd.tls);
      stores.push(s);
      return { s, d };
    });
    const settled = await Promise.allSettled(writers.map(({ s, d }) => applyManifests(s, [d])));
    const failures = settled.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
    expect(failures).toEqual([]);
    const results = settled.map((r) => (r as PromiseFulfilledResult<WriteResult>).value);
    for (const [i, r] of results.entries()) expect(r.created).toEqual([`Pod race/p${i}`]);
    // Each acknowledged write has its own revision.
    expect(new Set(results.map((r) => r.revision)).size).toBe(n);
    const attempts = results.map((r) => r.attempts);
    if (!attempts.some((a) => a > 1))
      console.log(`datastore race: no writer had to retry (${attempts.join(' ')})`);
    else console.log(`datastore race: attempts per writer ${attempts.join(' ')}`);

    const ips = await podIPs('race');
    expect(Object.keys(ips).sort()).toEqual(Array.from({ length: n }, (_, i) => `race/p${i}`).sort());
    for (const ip of Object.values(ips)) expect(inRange(POD_RANGE, ip), ip).toBe(true);
    expect(new Set(Object.values(ips)).size).toBe(n);
    for (const { s } of writers) s.close();
  });

  it('the CLI: apply --json, get -o json, get one pod, unknown kind, etcd down', async () => {
    await wipe();
    const dir = manifests({ 'all.yaml': docs(ns('cli'), pod('cli', 'web'), pod('cli', 'db')) });
    const applied = cli('apply', dir, '--etcd', etcd.clientUrl, '--json');
    expect(applied.stderr).toBe('');
    expect(applied.status).toBe(0);
    const out = JSON.parse(applied.stdout) as WriteResult & { etcd: string };
    expect(out.etcd).toBe(etcd.clientUrl);
    expect(out.created.sort()).toEqual(['Namespace cli', 'Pod cli/db', 'Pod cli/web']);
    expect(out.revision).toBe(await store.snapshotRevision());

    const got = cli('get', 'pods', '--etcd', etcd.clientUrl, '-o', 'json');
    expect(got.status).toBe(0);
    const listing = JSON.parse(got.stdout) as { revision: number; items: Obj[] };
    expect(listing.revision).toBe(out.revision);
    expect(listing.items.map((i) => i.metadata?.name)).toEqual(['db', 'web']);
    const ips = await podIPs('cli');
    for (const item of listing.items) {
      expect(item.status?.podIP).toBe(ips[`cli/${String(item.metadata?.name)}`]);
      expect(item.spec?.nodeName).toMatch(/^node-\d+$/);
    }

    const one = cli('get', 'pod', 'web', '-n', 'cli', '--etcd', etcd.clientUrl);
    expect(one.status).toBe(0);
    expect(one.stdout).toMatch(/NAMESPACE\s+NAME\s+NODE\s+IP/);
    expect(one.stdout).toContain(ips['cli/web']);
    expect(one.stdout).not.toContain(ips['cli/db']);

    const unknown = cli('get', 'widgets', '--etcd', etcd.clientUrl);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain("unknown kind 'widgets'");

    const absent = cli('get', 'pod', 'nope', '-n', 'cli', '--etcd', etcd.clientUrl);
    expect(absent.status).toBe(1);
    expect(absent.stderr).toContain("Pod 'nope' not found");

    const down = `http://127.0.0.1:${await freePort()}`;
    const started = Date.now();
    const failed = cli('apply', dir, '--etcd', down);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toContain(down);
    expect(failed.stdout).toBe('');
    const getFailed = cli('get', 'pods', '--etcd', down);
    expect(getFailed.status).toBe(1);
    expect(getFailed.stderr).toContain(down);
    console.log(`datastore CLI: two commands against a dead etcd took ${Date.now() - started} ms`);
  });

  describe('EtcdSource', () => {
    const stateDir = (): string => tmp();
    let dir: string;
    let node1Pod: { namespace: string; app: string; id: string };

    async function applyOne(name: string, text: string): Promise<WriteResult> {
      return applyManifests(store, [manifests({ [name]: text })]);
    }

    /** A policy on node-1's pod for egress, so the change shows in node-1's slice. */
    function egressPolicy(name: string, port: number): string {
      return policy(
        node1Pod.namespace,
        name,
        `  podSelector: { matchLabels: { app: ${node1Pod.app} } }\n  policyTypes: [Egress]\n  egress:\n    - ports: [{ protocol: TCP, port: ${port} }]\n`,
      );
    }

    function egressPorts(state: DesiredState, name: string): number[] {
      const rs = state.ir.ruleSets.find((r) => r.endpoint === node1Pod.id && r.direction === 'egress');
      return (rs?.kubernetesRules ?? [])
        .filter((r) => r.policy.name === name)
        .flatMap((r) => (r.ports ?? []).map((p) => p.first));
    }

    async function caughtUp(source: EtcdSource, revision: number): Promise<DesiredState> {
      return waitFor(`the source to reach revision ${revision}`, async () => {
        const s = await source.read();
        return Number(s.revision) >= revision ? s : undefined;
      });
    }

    let state: string;
    let source: EtcdSource;
    let last: DesiredState;

    beforeAll(async () => {
      await wipe();
      dir = tmp();
      cpSync(WALKTHROUGH, dir, { recursive: true });
      await applyManifests(store, [dir]);
      const pods = await objects('Pod');
      const [id, o] = Object.entries(pods).find(([, p]) => (p as Obj).spec?.nodeName === 'node-1') as [
        string,
        Obj,
      ];
      node1Pod = {
        id,
        namespace: id.split('/')[0] as string,
        app: (o.metadata?.labels as Record<string, string>).app as string,
      };
      state = stateDir();
    });

    it('first read lists; the IR has rule sets for node-1 only, endpoints of every node', async () => {
      source = new EtcdSource(etcd.clientUrl, { node: 'node-1', stateDir: state, tls: etcd.tls });
      const desired = await source.read();
      expect(source.stats.lists).toBe(1);
      expect(Number(desired.revision)).toBe(await store.snapshotRevision());
      const pods = await objects('Pod');
      expect(desired.ir.endpoints.map((e) => e.id).sort()).toEqual(Object.keys(pods).sort());
      for (const e of desired.ir.endpoints) {
        expect(e.node).toBe((pods[e.id] as Obj).spec?.nodeName);
        // Stored dual-stack (status.podIPs: the IPv4 podIP, then the IPv6 address), read as both.
        const status = (pods[e.id] as Obj).status;
        const v6 = (status?.podIPs as { ip: string }[] | undefined)?.[1]?.ip;
        expect(v6).toMatch(/^fd00:5957::/);
        expect(e.addresses).toEqual([status?.podIP, v6]);
      }
      const local = desired.ir.endpoints.filter((e) => e.node === 'node-1').map((e) => e.id);
      expect(local.length).toBeGreaterThan(0);
      expect(local.length).toBeLessThan(desired.ir.endpoints.length);
      const withRules = new Set(desired.ir.ruleSets.map((r) => r.endpoint));
      expect([...withRules].sort()).toEqual([...local].sort());
      expect(desired.ir.ruleSets).toHaveLength(local.length * 2);
      last = desired;
    });

    it('watch: an applied policy change reaches read() with its revision', async () => {
      let changes = 0;
      const stop = source.watch(() => changes++);
      stops.push(stop);
      await waitFor('the watch', async () => (source.stats.connected ? true : undefined));
      const w = await applyOne('egress.yaml', egressPolicy('egress-watch', 5001));
      const desired = await caughtUp(source, w.revision);
      expect(changes).toBeGreaterThan(0);
      expect(egressPorts(desired, 'egress-watch')).toEqual([5001]);
      expect(egressPorts(last, 'egress-watch')).toEqual([]);
      expect(source.stats.lists).toBe(1);
      expect(source.stats.events).toBeGreaterThan(0);
      // The event reached the calculation as a change of one object: no relist, no full build, and
      // the IR is the one a fresh list builds.
      expect(source.stats).toMatchObject({ fullBuilds: 1, incrementalBuilds: 1, modelChanges: 1 });
      const fresh = new EtcdSource(etcd.clientUrl, { node: 'node-1', stateDir: stateDir(), tls: etcd.tls });
      expect((await fresh.read()).ir).toEqual(desired.ir);
      last = desired;
      stop();
    });

    it('restart: a new source starts from its cache and resumes the watch without listing', async () => {
      // Written while no source runs.
      const w = await applyOne('egress.yaml', egressPolicy('egress-watch', 5002));
      source = new EtcdSource(etcd.clientUrl, { node: 'node-1', stateDir: state, tls: etcd.tls });
      const cached = await source.read();
      expect(source.stats.lists).toBe(0);
      expect(cached.revision).toBe(last.revision);
      expect(cached.ir).toEqual(last.ir);
      const stop = source.watch(() => undefined);
      stops.push(stop);
      const desired = await caughtUp(source, w.revision);
      expect(egressPorts(desired, 'egress-watch')).toEqual([5002]);
      expect(source.stats.resumes).toBe(1);
      expect(source.stats.lists).toBe(0);
      last = desired;
      stop();
    });

    it('compaction: a watch that cannot resume relists and ends equal to a fresh list', async () => {
      await applyOne('egress.yaml', egressPolicy('egress-watch', 5003));
      await applyOne('egress2.yaml', egressPolicy('egress-compact', 6000));
      const latest = await store.snapshotRevision();
      await store.compact(latest);

      source = new EtcdSource(etcd.clientUrl, { node: 'node-1', stateDir: state, tls: etcd.tls });
      expect((await source.read()).revision).toBe(last.revision);
      expect(source.stats.lists).toBe(0);
      const stop = source.watch(() => undefined);
      stops.push(stop);
      const desired = await caughtUp(source, latest);
      await waitFor('a relist', async () => (source.stats.lists >= 1 ? true : undefined));
      expect(source.stats.compactions).toBeGreaterThanOrEqual(1);
      expect(source.stats.lists).toBeGreaterThanOrEqual(1);
      expect(egressPorts(desired, 'egress-watch')).toEqual([5003]);
      expect(egressPorts(desired, 'egress-compact')).toEqual([6000]);

      const fresh = new EtcdSource(etcd.clientUrl, { node: 'node-1', stateDir: stateDir(), tls: etcd.tls });
      const listed = await fresh.read();
      stops.push(fresh.watch(() => undefined));
      expect(fresh.stats.lists).toBe(1);
      const now = await source.read();
      expect(now.revision).toBe(listed.revision);
      expect(now.ir).toEqual(listed.ir);
      last = now;
      // Keeps watching for the next test.
    });

    it('etcd SIGKILLed under a watching source: the last state stays, writes fail, then it catches up', async () => {
      const before = await source.read();
      await killEtcd(LAB, 'SIGKILL');
      const during = await source.read();
      expect(during.revision).toBe(before.revision);
      expect(during.ir).toEqual(before.ir);

      const failed = await rejection(
        applyManifests(store, [manifests({ 'egress.yaml': egressPolicy('egress-watch', 5004) })]),
      );
      expect(failed).toBeInstanceOf(DatastoreError);
      expect(failed.message).toContain(etcd.clientUrl);
      expect((await source.read()).revision).toBe(before.revision);

      const again = await restartEtcd(LAB);
      expect(again.clientUrl).toBe(etcd.clientUrl);
      const w = await waitFor(
        'an apply after the restart',
        () => applyOne('egress.yaml', egressPolicy('egress-watch', 5004)),
        10_000,
      );
      expect(w.revision).toBeGreaterThan(Number(before.revision));
      const started = Date.now();
      const desired = await caughtUp(source, w.revision);
      console.log(`datastore: the source caught up ${Date.now() - started} ms after the write`);
      expect(egressPorts(desired, 'egress-watch')).toEqual([5004]);
    });
  });
});
