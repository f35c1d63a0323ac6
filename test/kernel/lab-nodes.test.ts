/**
 * Pods pinned to named nodes: cross-node traffic over the fabric, status.podIP, nodes appearing
 * (which renumbers fabric addresses), pods moving between nodes, and the errors a user can hit.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readState } from '../../src/lab/state.js';
import { namespace, pod } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import {
  allTrue,
  cli,
  cliOk,
  leftovers,
  manifestFile,
  netnsInode,
  NOTHING_LEFT,
  type Matrix,
} from './lab-harness.js';

const LAB = 't-lab2';
const ports = [
  { containerPort: 80, protocol: 'TCP' as const },
  { containerPort: 80, protocol: 'UDP' as const },
];

interface Placement {
  [id: string]: { node: string; ip?: string };
}

function cluster(placement: Placement): string {
  return manifestFile([
    namespace('x', { ns: 'x' }),
    namespace('y', { ns: 'y' }),
    ...Object.entries(placement).map(([id, p]) => {
      const [ns, name] = id.split('/') as [string, string];
      return pod(ns, name, { labels: { pod: name }, node: p.node, ports, ...(p.ip ? { ip: p.ip } : {}) });
    }),
  ]);
}

const BASE: Placement = {
  'x/a': { node: 'alpha', ip: '198.18.40.1' },
  'x/b': { node: 'beta' },
  'y/a': { node: 'alpha' },
  'y/b': { node: 'beta', ip: '198.18.40.2' },
};

async function reach(args: string[] = []): Promise<Matrix> {
  return (JSON.parse(await cliOk(['lab', 'reach', '--name', LAB, '--json', ...args])) as { results: Matrix })
    .results;
}

function inNs(netns: string, ...args: string[]): string {
  return execFileSync('ip', ['-n', netns, ...args], { encoding: 'utf8' });
}

describeKernel('lab: pods on named nodes', () => {
  beforeAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    await cli(['lab', 'down', '--name', `${LAB}e`]);
    await cliOk(['lab', 'up', cluster(BASE), '--name', LAB]);
  });

  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    await cli(['lab', 'down', '--name', `${LAB}e`]);
  });

  it('puts pods on their spec.nodeName, honours status.podIP and routes like Calico', () => {
    const t = readState(LAB)?.topology;
    expect(t?.nodes.map((n) => [n.name, n.netns, n.address])).toEqual([
      ['alpha', `sy-${LAB}-alpha`, '198.18.255.1'],
      ['beta', `sy-${LAB}-beta`, '198.18.255.2'],
    ]);
    const xa = t?.pods.find((p) => p.id === 'x/a');
    const xb = t?.pods.find((p) => p.id === 'x/b');
    expect(xa).toMatchObject({ node: 'alpha', address: '198.18.40.1' });
    expect(t?.pods.find((p) => p.id === 'y/b')).toMatchObject({ node: 'beta', address: '198.18.40.2' });
    // Pod: /32 on eth0, default via the link-local next hop the host side answers for.
    expect(inNs(xa?.netns as string, 'route')).toMatch(/default via 169\.254\.1\.1 dev eth0/);
    // Node: /32 to the local pod's host-side veth, remote pods via the other node's fabric address.
    const alphaRoutes = inNs(`sy-${LAB}-alpha`, 'route');
    expect(alphaRoutes).toContain(`198.18.40.1 dev ${xa?.hostInterface} scope link`);
    expect(alphaRoutes).toContain(`${xb?.address} via 198.18.255.2 dev fabric0`);
    expect(
      execFileSync('ip', ['netns', 'exec', `sy-${LAB}-alpha`, 'cat', '/proc/sys/net/ipv4/ip_forward'], {
        encoding: 'utf8',
      }).trim(),
    ).toBe('1');
  });

  it('reaches across nodes on TCP and UDP', async () => {
    expect(allTrue(await reach())).toBe(true);
    expect(allTrue(await reach(['--protocol', 'UDP']))).toBe(true);
  });

  it('keeps cross-node traffic working when a new node renumbers the fabric', async () => {
    const keep = netnsInode(`sy-${LAB}-x-a`);
    await cliOk(['lab', 'apply', cluster({ ...BASE, 'x/c': { node: 'aaa' } }), '--name', LAB]);
    const t = readState(LAB)?.topology;
    expect(t?.nodes.map((n) => [n.name, n.address])).toEqual([
      ['aaa', '198.18.255.1'],
      ['alpha', '198.18.255.2'],
      ['beta', '198.18.255.3'],
    ]);
    expect(netnsInode(`sy-${LAB}-x-a`)).toBe(keep);
    expect(allTrue(await reach())).toBe(true);
  });

  it('moves a pod to another node by recreating it with the same address', async () => {
    const before = netnsInode(`sy-${LAB}-x-a`);
    await cliOk([
      'lab',
      'apply',
      cluster({ ...BASE, 'x/a': { node: 'beta', ip: '198.18.40.1' } }),
      '--name',
      LAB,
    ]);
    const t = readState(LAB)?.topology;
    expect(t?.pods.find((p) => p.id === 'x/a')).toMatchObject({ node: 'beta', address: '198.18.40.1' });
    expect(t?.nodes.map((n) => n.name)).toEqual(['alpha', 'beta']);
    expect(existsSync(`/run/netns/sy-${LAB}-aaa`)).toBe(false);
    expect(netnsInode(`sy-${LAB}-x-a`)).not.toBe(before);
    expect(allTrue(await reach())).toBe(true);
  });

  it('spreads unplaced pods over --nodes', async () => {
    const file = manifestFile([namespace('x'), ...['a', 'b', 'c'].map((n) => pod('x', n))]);
    await cliOk(['lab', 'up', file, '--name', `${LAB}e`, '--nodes', '3']);
    expect(new Set(readState(`${LAB}e`)?.topology?.pods.map((p) => p.node))).toEqual(
      new Set(['node-1', 'node-2', 'node-3']),
    );
    expect(
      allTrue(
        await (async () =>
          (JSON.parse(await cliOk(['lab', 'reach', '--name', `${LAB}e`, '--json'])) as { results: Matrix })
            .results)(),
      ),
    ).toBe(true);
    await cliOk(['lab', 'down', '--name', `${LAB}e`]);
    expect(leftovers(`${LAB}e`)).toEqual(NOTHING_LEFT);
  });

  it('refuses bad input clearly and creates nothing', async () => {
    const outside = manifestFile([namespace('x'), pod('x', 'a', { ip: '10.9.8.7' })]);
    const r1 = await cli(['lab', 'up', outside, '--name', `${LAB}e`]);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(
      /pod x\/a: address 10\.9\.8\.7 \(status\.podIP\) is outside the lab's pod range 198\.18\.0\.0\/16/,
    );
    expect(leftovers(`${LAB}e`).netns).toEqual([]);

    const r2 = await cli(['lab', 'up', outside, '--name', 'Bad_Name']);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/invalid lab name 'Bad_Name'/);
    const r3 = await cli(['lab', 'status', '--name', 'x'.repeat(30)]);
    expect(r3.stderr).toMatch(/too long/);

    const r4 = await cli(['lab', 'apply', outside, '--name', 'nolab']);
    expect(r4.code).toBe(1);
    expect(r4.stderr).toMatch(/lab 'nolab' is not up/);
    const r5 = await cli(['lab', 'reach', '--name', 'nolab']);
    expect(r5.stderr).toMatch(/lab 'nolab' is not up/);

    execFileSync('ip', ['netns', 'add', `sy-${LAB}e-x-a`]);
    try {
      const clash = await cli(['lab', 'up', cluster(BASE), '--name', `${LAB}e`]);
      expect(clash.code).toBe(1);
      expect(clash.stderr).toMatch(
        new RegExp(`network namespace sy-${LAB}e-x-a already exists but is not part of lab`),
      );
    } finally {
      execFileSync('ip', ['netns', 'del', `sy-${LAB}e-x-a`]);
    }

    const r6 = await cli(['lab', 'up', cluster(BASE), '--name', `${LAB}e`, '--backend', 'bogus']);
    expect(r6.code).not.toBe(0);
    expect(r6.stderr).toMatch(/--backend/);
    expect(leftovers(`${LAB}e`)).toEqual(NOTHING_LEFT);
  });

  it('needs root and says so', () => {
    let stderr = '';
    try {
      execFileSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          'bin/switchyard',
          'lab',
          'up',
          'examples/xyz',
          '--name',
          `${LAB}e`,
        ],
        {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
    } catch (e) {
      stderr = (e as { stderr: string }).stderr;
    }
    expect(stderr).toMatch(/switchyard lab up needs root/);
  });
});
