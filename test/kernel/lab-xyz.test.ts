/**
 * The upstream x/y/z model in a lab: up, reach, exec, converge, apply (add, remove, relabel,
 * ports) and down, through the real CLI with real packets.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { namespace, pod, type Manifest } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import {
  allTrue,
  cgroup2,
  cli,
  cliOk,
  leftovers,
  manifestFile,
  netnsInode,
  NOTHING_LEFT,
  probeServerPids,
  rootNetworkSnapshot,
  XYZ,
  type Matrix,
} from './lab-harness.js';

const LAB = 't-lab1';
const PODS = ['x/a', 'x/b', 'x/c', 'y/a', 'y/b', 'y/c', 'z/a', 'z/b', 'z/c'];
const XYZ_PORTS = [80, 81].flatMap((port) =>
  (['TCP', 'UDP'] as const).map((protocol) => ({
    name: `serve-${port}-${protocol.toLowerCase()}`,
    containerPort: port,
    protocol,
  })),
);

/** x/y/z as manifests, so tests can change one thing at a time. */
function xyz(change: (pods: Map<string, Manifest>) => void = () => undefined): string {
  const pods = new Map<string, Manifest>();
  for (const id of PODS) {
    const [ns, name] = id.split('/') as [string, string];
    pods.set(id, pod(ns, name, { labels: { pod: name }, ports: XYZ_PORTS }));
  }
  change(pods);
  return manifestFile([...['x', 'y', 'z'].map((n) => namespace(n, { ns: n })), ...pods.values()]);
}

async function reachJson(args: string[] = []): Promise<{ port: number; protocol: string; results: Matrix }> {
  return JSON.parse(await cliOk(['lab', 'reach', '--name', LAB, '--json', ...args])) as {
    port: number;
    protocol: string;
    results: Matrix;
  };
}

describeKernel('lab: the x/y/z model', () => {
  let rootBefore = '';

  beforeAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    rootBefore = await rootNetworkSnapshot();
    await cliOk(['lab', 'up', XYZ, '--name', LAB, '--nodes', '2']);
  });

  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  });

  it('makes a namespace per node and pod, a fabric, a cgroup per pod and one probe server; the root namespace is untouched', async () => {
    const state = readState(LAB);
    expect(state?.status).toBe('ready');
    const t = state?.topology;
    expect(t?.pods.map((p) => p.id)).toEqual(PODS);
    expect(t?.nodes.map((n) => n.name)).toEqual(['node-1', 'node-2']);
    expect(new Set(t?.pods.map((p) => p.node))).toEqual(new Set(['node-1', 'node-2']));
    for (const ns of [
      `sy-${LAB}-fabric`,
      `sy-${LAB}-node-1`,
      `sy-${LAB}-node-2`,
      ...PODS.map((id) => `sy-${LAB}-${id.replace('/', '-')}`),
    ]) {
      expect(existsSync(join('/run/netns', ns)), ns).toBe(true);
    }
    for (const p of t?.pods ?? []) {
      expect(p.address).toMatch(/^198\.18\.\d+\.\d+$/);
      expect(existsSync(join(cgroup2(), 'switchyard', LAB, p.slug, 'cgroup.procs'))).toBe(true);
    }
    expect(probeServerPids(LAB)).toEqual([state?.probe?.pid]);
    expect(await rootNetworkSnapshot()).toBe(rootBefore);
  });

  it('reaches every pod from every pod on TCP 80, TCP 81 and UDP 80 without policy', async () => {
    for (const args of [[], ['--port', '81'], ['--protocol', 'UDP']]) {
      const m = await reachJson(args);
      expect(Object.keys(m.results)).toEqual(PODS);
      for (const src of PODS) expect(Object.keys(m.results[src] ?? {})).toEqual(PODS);
      expect(allTrue(m.results), `${args.join(' ')}: ${JSON.stringify(m.results)}`).toBe(true);
    }
    const udp = await reachJson(['--protocol', 'udp', '--port', '81']);
    expect(udp.port).toBe(81);
    expect(udp.protocol).toBe('UDP');
    expect(allTrue(udp.results)).toBe(true);
  });

  it('says who answered (each probe server answers with its pod), and a closed port is not reached', async () => {
    for (const protocol of ['TCP', 'UDP'] as const) {
      const r = await measureReach(LAB, { port: 80, protocol });
      for (const src of PODS) for (const dst of PODS) expect(r.details[src]?.[dst]?.answer).toBe(dst);
    }
    const closed = await reachJson(['--port', '82', '--from', 'x/a']);
    expect(Object.keys(closed.results)).toEqual(['x/a']);
    expect(Object.values(closed.results['x/a'] ?? {}).some(Boolean)).toBe(false);
  });

  it('measures the 9×9 matrix for one port and protocol in under 3 s', async () => {
    const r = await measureReach(LAB, { port: 80, protocol: 'TCP' });
    expect(r.durationMs).toBeLessThan(3000);
    const human = await cliOk(['lab', 'reach', '--name', LAB, '--port', '81']);
    expect(human).toMatch(/TCP\/81 measured in lab t-lab1, compared with the prediction/);
    expect(human).toMatch(/pairs probed: .*mismatches with the prediction \(\d+ ms\)/);
    expect(human).toMatch(/^x\/a +\. +\. +\./m);
  });

  it('lab exec runs a command in the pod namespace and cgroup and passes its exit status', async () => {
    const state = readState(LAB);
    const xa = state?.topology?.pods.find((p) => p.id === 'x/a');
    const out = await cliOk([
      'lab',
      'exec',
      '--name',
      LAB,
      'x/a',
      '--',
      'sh',
      '-c',
      'ip -o -4 addr show dev eth0; grep ^0:: /proc/self/cgroup',
    ]);
    expect(out).toContain(`inet ${xa?.address}/32`);
    expect(out).toContain(`0::/switchyard/${LAB}/x-a`);
    const failed = await cli(['lab', 'exec', '--name', LAB, 'y/b', '--', 'sh', '-c', 'exit 7']);
    expect(failed.code).toBe(7);
    const unknown = await cli(['lab', 'exec', '--name', LAB, 'x/nope', '--', 'true']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no pod 'x\/nope'/);
  });

  it('lab up a second time converges without touching anything', async () => {
    const before = readState(LAB);
    const inodes = before?.topology?.pods.map((p) => netnsInode(p.netns));
    const out = await cliOk(['lab', 'up', XYZ, '--name', LAB, '--nodes', '2']);
    expect(out).toMatch(/no changes/);
    const after = readState(LAB);
    expect(after?.probe?.pid).toBe(before?.probe?.pid);
    expect(after?.topology).toEqual(before?.topology);
    expect(after?.topology?.pods.map((p) => netnsInode(p.netns))).toEqual(inodes);
  });

  it('lab apply adds, removes and relabels pods, touching only the difference', async () => {
    const before = readState(LAB);
    const inode = new Map(before?.topology?.pods.map((p) => [p.id, netnsInode(p.netns)]));
    const address = new Map(before?.topology?.pods.map((p) => [p.id, p.address]));
    const file = xyz((pods) => {
      pods.delete('z/c');
      pods.set('x/d', pod('x', 'd', { labels: { pod: 'd' }, ports: XYZ_PORTS }));
      pods.set('y/b', pod('y', 'b', { labels: { pod: 'b', tier: 'db' }, ports: XYZ_PORTS }));
    });
    const out = await cliOk(['lab', 'apply', file, '--name', LAB]);
    expect(out).toMatch(/\+1 pods, -1 pods/);
    const after = readState(LAB);
    const ids = after?.topology?.pods.map((p) => p.id);
    expect(ids).toEqual(['x/a', 'x/b', 'x/c', 'x/d', 'y/a', 'y/b', 'y/c', 'z/a', 'z/b']);
    expect(existsSync(`/run/netns/sy-${LAB}-z-c`)).toBe(false);
    expect(existsSync(join(cgroup2(), 'switchyard', LAB, 'z-c'))).toBe(false);
    for (const p of after?.topology?.pods ?? []) {
      if (p.id === 'x/d') continue;
      expect(netnsInode(p.netns), p.id).toBe(inode.get(p.id));
      expect(p.address, p.id).toBe(address.get(p.id));
    }
    expect(after?.probe?.pid).toBe(before?.probe?.pid);
    expect(after?.ir.endpoints.find((e) => e.id === 'y/b')?.labels).toEqual({ pod: 'b', tier: 'db' });
    const m = await reachJson();
    expect(Object.keys(m.results)).toEqual(ids);
    expect(allTrue(m.results)).toBe(true);
  });

  it('lab apply changes what a pod serves without recreating it', async () => {
    const inode = netnsInode(`sy-${LAB}-x-c`);
    const file = xyz((pods) => {
      pods.delete('z/c');
      pods.set('x/d', pod('x', 'd', { labels: { pod: 'd' }, ports: XYZ_PORTS }));
      pods.set('y/b', pod('y', 'b', { labels: { pod: 'b', tier: 'db' }, ports: XYZ_PORTS }));
      pods.set(
        'x/c',
        pod('x', 'c', { labels: { pod: 'c' }, ports: [{ containerPort: 8080, protocol: 'TCP' }] }),
      );
    });
    await cliOk(['lab', 'apply', file, '--name', LAB]);
    expect(netnsInode(`sy-${LAB}-x-c`)).toBe(inode);
    const on8080 = await reachJson(['--port', '8080', '--from', 'y/a']);
    expect(on8080.results['y/a']?.['x/c']).toBe(true);
    expect(on8080.results['y/a']?.['x/a']).toBe(false);
    const on80 = await reachJson(['--from', 'y/a']);
    expect(on80.results['y/a']?.['x/c']).toBe(false);
    expect(on80.results['y/a']?.['x/a']).toBe(true);
  });

  it('lab status lists the lab and its pods', async () => {
    const all = JSON.parse(await cliOk(['lab', 'status', '--json'])) as {
      labs: { name: string; pods: number; status: string }[];
    };
    expect(all.labs.find((l) => l.name === LAB)).toMatchObject({ status: 'ready', pods: 9 });
    const one = await cliOk(['lab', 'status', '--name', LAB]);
    expect(one).toMatch(/probe server pid \d+ running/);
    expect(one).toMatch(/^x\/d +node-\d/m);
  });

  it('lab down removes namespaces, cgroups, the probe server and the state; a second down names the labs there are', async () => {
    const out = await cliOk(['lab', 'down', '--name', LAB]);
    // 9 pods, 2 nodes, the fabric and the outside client.
    expect(out).toMatch(/removed 13 namespaces/);
    expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
    const again = await cli(['lab', 'down', '--name', LAB]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(new RegExp(`lab '${LAB}' is not up`));
    expect(await rootNetworkSnapshot()).toBe(rootBefore);
  });
});
