/**
 * Every lab agent serves Prometheus metrics on its own loopback port (the kernel picks it; `node
 * status` lists it), on every backend, with the same series under the same names, following the
 * exposition conventions; a probe the policy denies moves `switchyard_drops_total{reason="policy"}`.
 * One small lab per backend (two nodes: a client and a server isolated by a NetworkPolicy).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { StatusResponse } from '../../src/agent/api-types.js';
import type { BackendName } from '../../src/dataplane/backend.js';
import { availableBackends } from '../../src/dataplane/registry.js';
import { readState } from '../../src/lab/state.js';
import { checkExposition, parseExposition, samplesOf } from '../support/exposition.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod } from '../support/manifests.js';
import { cli, cliOk, leftovers, manifestFile, NOTHING_LEFT } from './lab-harness.js';

const BACKENDS: readonly BackendName[] = ['iptables', 'nftables', 'ebpf'];
const LAB: Record<BackendName, string> = { iptables: 'mtipt', nftables: 'mtnft', ebpf: 'mtebpf' };

/** m/client on node-1, m/db on node-2 taking nothing in (a policy selects it and allows nobody). */
function model(): string {
  return manifestFile([
    namespace('m', { ns: 'm' }),
    pod('m', 'client', { labels: { app: 'client' }, node: 'node-1' }),
    pod('m', 'db', {
      labels: { app: 'db' },
      node: 'node-2',
      ports: [{ name: 'pg', containerPort: 5432, protocol: 'TCP' }],
    }),
    networkPolicy('m', 'db-deny-all', {
      podSelector: { matchLabels: { app: 'db' } },
      policyTypes: ['Ingress'],
    }),
  ]);
}

async function statuses(lab: string): Promise<StatusResponse[]> {
  return JSON.parse(await cliOk(['node', 'status', '--lab', lab, '--json'])) as StatusResponse[];
}

async function scrape(url: string): Promise<string> {
  const r = await fetch(url);
  expect(r.status, url).toBe(200);
  return r.text();
}

/** Node → metrics URL of each lab's agents, as `node status --json` lists them (read once). */
const urls = new Map<string, Map<string, string>>();

async function metricsUrls(lab: string): Promise<Map<string, string>> {
  let known = urls.get(lab);
  if (!known) {
    known = new Map((await statuses(lab)).map((s) => [s.node, s.metricsUrl ?? '']));
    urls.set(lab, known);
  }
  return known;
}

/** Sum of a series over the lab's agents. */
async function total(lab: string, name: string, labels: Record<string, string>): Promise<number> {
  let sum = 0;
  for (const url of (await metricsUrls(lab)).values())
    for (const sample of samplesOf(await scrape(url)))
      if (sample.name === name && Object.entries(labels).every(([k, v]) => sample.labels[k] === v))
        sum += sample.value;
  return sum;
}

describeKernel('metrics: every agent on every backend', () => {
  const file = model();

  beforeAll(async () => {
    for (const backend of BACKENDS) {
      expect(availableBackends()).toContain(backend);
      await cli(['lab', 'down', '--name', LAB[backend]]);
      await cliOk(['lab', 'up', file, '--name', LAB[backend], '--backend', backend, '--nodes', '2']);
    }
  }, 240_000);

  afterAll(async () => {
    for (const backend of BACKENDS) await cli(['lab', 'down', '--name', LAB[backend]]);
    for (const backend of BACKENDS) expect(leftovers(LAB[backend])).toEqual(NOTHING_LEFT);
  }, 120_000);

  it('lists a loopback metrics URL per agent, no two alike, and each serves a clean exposition', async () => {
    const urls: string[] = [];
    for (const backend of BACKENDS) {
      const all = await statuses(LAB[backend]);
      expect(all.map((s) => s.node).sort()).toEqual(['node-1', 'node-2']);
      for (const s of all) {
        expect(s.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
        urls.push(s.metricsUrl ?? '');
        expect(checkExposition(await scrape(s.metricsUrl ?? '')), `${backend} ${s.node}`).toEqual([]);
      }
      const table = await cliOk(['node', 'status', '--lab', LAB[backend]]);
      expect(table).toMatch(/\bMETRICS\b/);
      for (const s of all) expect(table).toContain(s.metricsUrl);
    }
    expect(new Set(urls).size).toBe(urls.length);
  });

  it('has the same series names on the three backends, the felix/Cilium-style ones included', async () => {
    const names = new Map<BackendName, string[]>();
    for (const backend of BACKENDS) {
      const { families } = parseExposition(
        await scrape((await metricsUrls(LAB[backend])).get('node-1') ?? ''),
      );
      names.set(
        backend,
        families
          .map((f) => f.name)
          .filter((n) => n.startsWith('switchyard_') && !n.startsWith('switchyard_agent_')),
      );
    }
    const ebpf = [...(names.get('ebpf') ?? [])].sort();
    expect([...(names.get('iptables') ?? [])].sort()).toEqual(ebpf);
    expect([...(names.get('nftables') ?? [])].sort()).toEqual(ebpf);
    for (const name of [
      'switchyard_build_info',
      'switchyard_endpoints',
      'switchyard_policies',
      'switchyard_revision_in_force',
      'switchyard_revision_desired',
      'switchyard_last_apply_success_timestamp_seconds',
      'switchyard_drops_total',
      'switchyard_flows_processed_total',
      'switchyard_apply_duration_seconds',
      'switchyard_conntrack_entries',
    ])
      expect(ebpf).toContain(name);
    for (const backend of BACKENDS) {
      const all = samplesOf(await scrape((await metricsUrls(LAB[backend])).get('node-2') ?? ''));
      const one = (name: string): number | undefined => all.find((s) => s.name === name)?.value;
      expect(one('switchyard_endpoints'), backend).toBe(1);
      expect(one('switchyard_policies'), backend).toBe(1);
      expect(one('switchyard_revision_in_force'), backend).toBe(one('switchyard_revision_desired'));
      expect(one('switchyard_last_apply_success_timestamp_seconds'), backend).toBeGreaterThan(0);
    }
  });

  it('counts a probe the policy denies in switchyard_drops_total{reason="policy",direction="ingress"}', async () => {
    for (const backend of BACKENDS) {
      const lab = LAB[backend];
      const db = readState(lab)?.ir.endpoints.find((e) => e.id === 'm/db');
      const drops = { reason: 'policy', direction: 'ingress' };
      const before = await total(lab, 'switchyard_drops_total', drops);
      const probe = JSON.parse(
        await cliOk([
          'lab',
          'probe',
          '--name',
          lab,
          '--from',
          'm/client',
          '--to',
          `${db?.addresses[0] ?? ''}:5432`,
          '--count',
          '3',
          '--timeout',
          '300',
          '--json',
        ]),
      ) as { answered: Record<string, number>; failures: number };
      expect(probe, backend).toMatchObject({ answered: {}, failures: 3 });
      expect(await total(lab, 'switchyard_drops_total', drops), backend).toBeGreaterThan(before);
    }
  });
});
