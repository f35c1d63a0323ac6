/**
 * Issue 19, the user surface of IPv6 against the real kernel: IPv6 traffic between lab pods shows
 * up in `switchyard flows` with its addresses (table, Hubble jsonpb with ipVersion IPv6), the
 * --ip/--from-ip/--to-ip filters select it by IPv6 address and CIDR, and the agents count it in
 * switchyard_flows_processed_total{family="ipv6"}; on eBPF, nftables and iptables. In cluster mode, etcd
 * stores the pods' IPv6 addresses and a dual-stack Service's IPv6 cluster IP, and the etcd-fed
 * agents judge an IPv6 pod pair by the policy.
 */
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { StatusResponse } from '../../src/agent/api-types.js';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import type { BackendName } from '../../src/dataplane/backend.js';
import { listObjects } from '../../src/datastore/read.js';
import { agentStateDir } from '../../src/lab/agents.js';
import { clusterStore, clusterUp } from '../../src/lab/cluster.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import type { LabPod } from '../../src/lab/topology.js';
import { loadManifests } from '../../src/model/index.js';
import { samplesOf } from '../support/exposition.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, service, type Manifest } from '../support/manifests.js';
import { waitUntil } from '../support/until.js';
import { cliOk, manifestFile } from './lab-harness.js';

const PORT = 5432;
const PORTS = [{ containerPort: PORT }];

/** db (node-2) admits web only; client and web on node-1; db is a dual-stack Service. */
function manifests(): Manifest[] {
  return [
    namespace('shop'),
    pod('shop', 'client', { labels: { app: 'client' }, node: 'node-1', ports: PORTS }),
    pod('shop', 'web', { labels: { app: 'web' }, node: 'node-1', ports: PORTS }),
    pod('shop', 'db', { labels: { app: 'db' }, node: 'node-2', ports: PORTS }),
    service('shop', 'db', {
      selector: { app: 'db' },
      ports: [{ port: PORT }],
      ipFamilyPolicy: 'PreferDualStack',
    }),
    networkPolicy('shop', 'db-from-web', {
      podSelector: { matchLabels: { app: 'db' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: PORT }] }],
    }),
  ];
}

function labPod(lab: string, id: string): LabPod {
  const p = readState(lab)?.topology?.pods.find((x) => x.id === id);
  if (!p?.addressV6) throw new Error(`lab ${lab}: pod ${id} has no IPv6 address`);
  return p;
}

interface HubbleLine {
  flow: {
    verdict: string;
    IP: { source: string; destination: string; ipVersion: string };
    traffic_direction: string;
  };
}

async function jsonpb(lab: string, ...filters: string[]): Promise<HubbleLine[]> {
  const out = await cliOk(['flows', '--lab', lab, '-o', 'jsonpb', '--limit', '200', ...filters]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as HubbleLine);
}

async function processedIPv6(lab: string): Promise<Record<string, number>> {
  const statuses = JSON.parse(await cliOk(['node', 'status', '--lab', lab, '--json'])) as StatusResponse[];
  const sum: Record<string, number> = {};
  for (const s of statuses) {
    const text = await (await fetch(s.metricsUrl ?? '')).text();
    for (const x of samplesOf(text))
      if (x.name === 'switchyard_flows_processed_total' && x.labels.family === 'ipv6')
        sum[x.labels.verdict ?? ''] = (sum[x.labels.verdict ?? ''] ?? 0) + x.value;
  }
  return sum;
}

/** Measured over IPv6: shop/web reaches shop/db on PORT, shop/client does not. */
async function expectWebReachesDbOverIpv6(lab: string): Promise<void> {
  const r = await measureReach(lab, {
    port: PORT,
    protocol: 'TCP',
    from: ['shop/web', 'shop/client'],
    family: 6,
    timeoutMs: 400,
  });
  expect(r.matrix.results['shop/web']?.['shop/db']).toBe(true);
  expect(r.matrix.results['shop/client']?.['shop/db']).toBe(false);
}

for (const backend of ['ebpf', 'nftables', 'iptables'] as BackendName[])
  describeKernel(`IPv6 flows on ${backend}: shown, filtered by IPv6 address and CIDR, counted`, () => {
    const lab = `v6sf${backend.slice(0, 2)}`;
    let file = '';

    beforeAll(async () => {
      file = manifestFile(manifests());
      await labDown(lab);
      await converge({
        name: lab,
        model: loadManifests([file]),
        files: [file],
        mode: 'up',
        backend,
        nodeCount: 2,
        agents: true,
      });
    }, 120_000);

    afterAll(async () => {
      await labDown(lab);
      rmSync(dirname(file), { recursive: true, force: true });
    }, 60_000);

    it('web → db over IPv6 is allowed and client → db denied; flows show and filter them by IPv6', async () => {
      await expectWebReachesDbOverIpv6(lab);

      const web = labPod(lab, 'shop/web');
      const client = labPod(lab, 'shop/client');
      const db = labPod(lab, 'shop/db');
      // The denial at db's ingress, found by db's IPv6 address and the client's /64.
      const denied = await waitUntil(
        'the IPv6 denial of client → db in flows',
        async () => {
          const lines = await jsonpb(lab, '--to-ip', db.addressV6 as string, '--verdict', 'deny');
          return lines.some((l) => l.flow.IP.source === client.addressV6) ? lines : undefined;
        },
        10_000,
        300,
      );
      for (const l of denied) {
        expect(l.flow.IP).toMatchObject({ destination: db.addressV6, ipVersion: 'IPv6' });
        expect(l.flow.verdict).toBe('DROPPED');
      }
      const allowed = await waitUntil(
        'the IPv6 connection web → db in flows',
        async () => {
          const lines = await jsonpb(
            lab,
            '--from-ip',
            `${web.addressV6 as string}/128`,
            '--to-ip',
            'fd00:5957::/32',
          );
          return lines.some((l) => l.flow.verdict === 'FORWARDED' && l.flow.IP.destination === db.addressV6)
            ? lines
            : undefined;
        },
        10_000,
        300,
      );
      expect(allowed.every((l) => l.flow.IP.source === web.addressV6 && l.flow.IP.ipVersion === 'IPv6')).toBe(
        true,
      );
      // IPv4 filters select none of it: no IPv4 traffic was made to db.
      expect(await jsonpb(lab, '--to-ip', db.address)).toEqual([]);
      expect(await jsonpb(lab, '--ip', '198.18.0.0/15', '--to-pod', 'shop/db')).toEqual([]);
      // The table names both pods of an IPv6 flow, as for IPv4.
      const table = await cliOk(['flows', '--lab', lab, '--ip', db.addressV6 as string, '--verdict', 'deny']);
      expect(table).toMatch(/shop\/client\s+shop\/db:5432\s+shop\/db ingress\s+DENY/);
      // Counted as IPv6 by the agents.
      const counted = await waitUntil(
        'IPv6 packets in switchyard_flows_processed_total',
        async () => {
          const c = await processedIPv6(lab);
          return (c.allow ?? 0) > 0 && (c.deny ?? 0) > 0 ? c : undefined;
        },
        10_000,
        300,
      );
      console.log(`${backend}: IPv6 flow packets counted ${JSON.stringify(counted)}`);
    }, 60_000);
  });

describeKernel('cluster mode: IPv6 addresses in etcd, an IPv6 pod pair judged by etcd-fed agents', () => {
  const lab = 'v6sclu';
  let file = '';

  beforeAll(async () => {
    // One pod states its IPv4 address: it is stored with an IPv6 one beside it all the same.
    file = manifestFile([...manifests(), pod('shop', 'pinned', { node: 'node-2', ip: '198.18.0.200' })]);
    await labDown(lab);
    await clusterUp({ name: lab, files: [file], backend: 'ebpf', nodeCount: 2 });
  }, 120_000);

  afterAll(async () => {
    await labDown(lab);
    rmSync(dirname(file), { recursive: true, force: true });
  }, 60_000);

  it("etcd holds each pod's IPv6 address and the Service's IPv6 cluster IP; the lab uses them", async () => {
    const store = clusterStore(lab);
    try {
      const pods = await listObjects(store, { kind: 'Pod', namespace: 'shop' });
      expect(pods.items).toHaveLength(4);
      for (const p of pods.items) {
        const status = p.object.status as { podIP: string; podIPs: { ip: string }[] };
        expect(status.podIPs.map((x) => x.ip)).toEqual([status.podIP, expect.stringMatching(/^fd00:5957::/)]);
        expect(labPod(lab, `shop/${p.ref.name}`).addressV6).toBe(status.podIPs[1]?.ip);
      }
      const svc = (await listObjects(store, { kind: 'Service', namespace: 'shop', name: 'db' })).items[0];
      const spec = svc?.object.spec as { clusterIP: string; clusterIPs: string[] };
      expect(spec.clusterIPs).toEqual([spec.clusterIP, expect.stringMatching(/^fd00:5957:/)]);
    } finally {
      store.close();
    }
  });

  it('web → db over IPv6 is allowed and client → db denied, and the agent explains it by the rule', async () => {
    await expectWebReachesDbOverIpv6(lab);
    const x = await agentRequest<{
      allowed: boolean;
      to: { address: string };
      ingress?: { rule?: { id: string } };
    }>(apiSocket(agentStateDir(lab, 'node-2')), `/v1/explain?from=shop/web&to=shop/db&port=${PORT}&family=6`);
    expect(x.allowed).toBe(true);
    expect(x.to.address).toBe(labPod(lab, 'shop/db').addressV6);
    expect(x.ingress?.rule?.id).toBe('np:shop/db-from-web/ingress/0');
  }, 60_000);
});
