/** The lab's outside, pure parts: names and addresses, load-balancer routes, the plan's lines, probe answers. */
import { describe, expect, it } from 'vitest';
import type { IR } from '../../src/ir/types.js';
import { LabError } from '../../src/lab/errors.js';
import { loadBalancerRoutes, outsideNames } from '../../src/lab/outside.js';
import { planChanges, planIsEmpty } from '../../src/lab/plan.js';
import { resolveTarget, summarise } from '../../src/lab/probe-service.js';
import { parseProbeAnswer, probeAnswer } from '../../src/lab/probe/protocol.js';
import { errnoName } from '../../src/netns/libc.js';
import { buildTopology, topologyNetns } from '../../src/lab/topology.js';
import { servicesIR } from './netfilter-services-fixture.js';

/** The fixture's IR with x/web exposed: node port 30080 on every node, one load-balancer address. */
function exposed(policy: 'Cluster' | 'Local', lb = '198.19.192.2'): IR {
  const ir = servicesIR();
  return {
    ...ir,
    services: ir.services.map((t) =>
      t.service === 'x/web' && t.port === 80
        ? { ...t, nodePort: 30080, loadBalancerIPs: [lb], externalTrafficPolicy: policy }
        : t,
    ),
  };
}

function nodeOf(ir: IR, pod: string): string {
  return ir.endpoints.find((e) => e.id === pod)?.node ?? '';
}

describe('lab outside: topology', () => {
  it("has a client named 'client' in sy-<lab>-outside.client, and nodes with external addresses", () => {
    const t = buildTopology('demo', servicesIR());
    expect(t.outside).toEqual([
      {
        name: 'client',
        slug: 'outside.client',
        netns: 'sy-demo-outside.client',
        address: '198.19.129.2',
        fabricPeer: 'o-client',
      },
    ]);
    expect(t.nodes.map((n) => [n.name, n.externalAddress])).toEqual([
      ['node-1', '198.19.128.1'],
      ['node-2', '198.19.128.2'],
    ]);
    expect(topologyNetns(t)).toContain('sy-demo-outside.client');
  });

  it("takes the IR's externalAddress when it has one", () => {
    const ir = servicesIR();
    const moved: IR = {
      ...ir,
      nodes: ir.nodes.map((n, i) => ({ ...n, externalAddress: `198.19.128.${i + 50}` })),
    };
    expect(buildTopology('demo', moved).nodes.map((n) => n.externalAddress)).toEqual([
      '198.19.128.50',
      '198.19.128.51',
    ]);
  });

  it('keeps a client its address when others come and go; names are checked', () => {
    const t0 = buildTopology('demo', servicesIR(), undefined, outsideNames(['zed']));
    expect(t0.outside?.map((o) => [o.name, o.address])).toEqual([
      ['client', '198.19.129.2'],
      ['zed', '198.19.129.3'],
    ]);
    const t1 = buildTopology('demo', servicesIR(), t0, outsideNames(['abc']));
    expect(t1.outside?.map((o) => [o.name, o.address])).toEqual([
      ['abc', '198.19.129.3'],
      ['client', '198.19.129.2'],
    ]);
    expect(outsideNames()).toEqual(['client']);
    expect(() => outsideNames(['Bad_Name'])).toThrow(LabError);
    expect(() => outsideNames(['a'.repeat(21)])).toThrow(/invalid outside client name/);
    // A long name still fits an interface name (≤ 15) in the fabric.
    const long = buildTopology('demo', servicesIR(), undefined, outsideNames(['a-very-long-client']));
    for (const o of long.outside ?? []) expect(o.fabricPeer.length).toBeLessThanOrEqual(15);
  });

  it('routes a load-balancer address to every node (Cluster) or the nodes with a backend (Local)', () => {
    const cluster = loadBalancerRoutes(
      exposed('Cluster'),
      new Map([
        ['node-1', '198.19.128.1'],
        ['node-2', '198.19.128.2'],
      ]),
    );
    expect(cluster).toEqual([{ address: '198.19.192.2', via: ['198.19.128.1', '198.19.128.2'] }]);
    // Local: only nodes holding a backend of x/web.
    const ir = exposed('Local');
    const onlyB3: IR = {
      ...ir,
      services: ir.services.map((t) => ({ ...t, backends: t.backends.filter((b) => b.endpoint === 'x/b3') })),
    };
    const ext = new Map([
      ['node-1', '198.19.128.1'],
      ['node-2', '198.19.128.2'],
    ]);
    const b3 = nodeOf(ir, 'x/b3');
    const withNode: IR = {
      ...onlyB3,
      services: onlyB3.services.map((t) => ({ ...t, backends: t.backends.map((b) => ({ ...b, node: b3 })) })),
    };
    expect(loadBalancerRoutes(withNode, ext)).toEqual([{ address: '198.19.192.2', via: [ext.get(b3)] }]);
    // Local without a backend anywhere: every node, which refuses.
    const none: IR = { ...ir, services: ir.services.map((t) => ({ ...t, backends: [] })) };
    expect(loadBalancerRoutes(none, ext)[0]?.via).toEqual(['198.19.128.1', '198.19.128.2']);
  });
});

describe('lab outside: plan', () => {
  it('makes the fabric a router: gateway, client link and route, load-balancer ECMP route', () => {
    const t = buildTopology('demo', exposed('Cluster'));
    const p = planChanges(undefined, t);
    const fabric = p.fabric?.lines ?? [];
    expect(fabric).toEqual(
      expect.arrayContaining([
        'addr replace 198.19.128.254/24 dev br0',
        'link add o-client address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns sy-demo-outside.client',
        'link set o-client up',
        'route replace 198.19.129.2/32 dev o-client scope link',
        'route replace 198.19.192.2/32 nexthop via 198.19.128.1 dev br0 nexthop via 198.19.128.2 dev br0',
      ]),
    );
    // The bridge exists before its address, the address before routes through it.
    expect(fabric.indexOf('link add br0 type bridge')).toBeLessThan(
      fabric.indexOf('addr replace 198.19.128.254/24 dev br0'),
    );
    expect(fabric.indexOf('addr replace 198.19.128.254/24 dev br0')).toBeLessThan(
      fabric.findIndex((l) => l.startsWith('route replace 198.19.192.2/32')),
    );
    expect(p.sysctls.find((s) => s.netns === 'sy-demo-fabric')?.entries).toEqual(
      expect.arrayContaining([
        ['net/ipv4/ip_forward', '1'],
        ['net/ipv4/fib_multipath_hash_policy', '1'],
        ['net/ipv4/conf/o-client/proxy_arp', '1'],
      ]),
    );
    expect(p.outsideSides).toEqual([{ netns: 'sy-demo-outside.client', address: '198.19.129.2' }]);
    for (const n of t.nodes) {
      const lines = p.nodes.find((b) => b.netns === n.netns)?.lines ?? [];
      // After the link is up: a gateway route needs the connected route.
      expect(lines.indexOf('link set fabric0 up')).toBeLessThan(
        lines.indexOf(`addr replace ${n.externalAddress}/24 dev fabric0`),
      );
      expect(lines).toContain('route replace 198.19.129.0/24 via 198.19.128.254 dev fabric0');
    }
  });

  it('changes only what changed: a load balancer moving, going; a client leaving', () => {
    const t0 = buildTopology('demo', exposed('Cluster'), undefined, outsideNames(['c2']));
    expect(
      planIsEmpty(planChanges(t0, buildTopology('demo', exposed('Cluster'), t0, outsideNames(['c2'])))),
    ).toBe(true);
    // A new address for the service: the old route goes, the new one comes.
    const t1 = buildTopology('demo', exposed('Cluster', '198.19.192.3'), t0, outsideNames(['c2']));
    const p1 = planChanges(t0, t1);
    expect(p1.fabric?.lines).toEqual([
      'route replace 198.19.192.3/32 nexthop via 198.19.128.1 dev br0 nexthop via 198.19.128.2 dev br0',
    ]);
    expect(p1.staleRoutes).toEqual([{ netns: 'sy-demo-fabric', lines: ['route del 198.19.192.2/32'] }]);
    expect(p1.nodes).toEqual([]);
    // c2 leaves: its fabric end and namespace go; nothing else.
    const t2 = buildTopology('demo', exposed('Cluster'), t0);
    const p2 = planChanges(t0, t2);
    expect(p2.removedOutside.map((o) => o.name)).toEqual(['c2']);
    expect(p2.deleteNetns).toEqual(['sy-demo-outside.c2']);
    expect(p2.unplug).toEqual([{ netns: 'sy-demo-fabric', lines: ['link del o-c2'] }]);
    expect(p2.fabric).toBeUndefined();
  });

  it('gives a lab from before the outside existed its router, client and node addresses', () => {
    const t = buildTopology('demo', servicesIR());
    const { outside: _o, loadBalancers: _l, ...old } = t;
    const before = { ...old, nodes: t.nodes.map(({ externalAddress: _e, ...n }) => n) };
    const p = planChanges(before, t);
    expect(p.createNetns).toEqual(['sy-demo-outside.client']);
    expect(p.fabric?.lines[0]).toBe('addr replace 198.19.128.254/24 dev br0');
    for (const n of t.nodes)
      expect(p.nodes.find((b) => b.netns === n.netns)?.lines).toEqual([
        `addr replace ${n.externalAddress}/24 dev fabric0`,
        'route replace 198.19.129.0/24 via 198.19.128.254 dev fabric0',
      ]);
  });
});

describe('lab outside: probes', () => {
  it('resolves nodeport/NODE:PORT to the external address and lb/IP:PORT as given', () => {
    const ir = exposed('Local');
    expect(resolveTarget(ir, 'nodeport/node-2:30080', 'TCP')).toEqual({
      address: '198.19.128.2',
      port: 30080,
    });
    expect(resolveTarget(ir, 'lb/198.19.192.2:80', 'TCP')).toEqual({ address: '198.19.192.2', port: 80 });
  });

  it('names a refusal at connect (an eBPF connect hook) as Node names a later one', () => {
    expect(errnoName(111)).toBe('ECONNREFUSED');
    expect(errnoName(101)).toBe('ENETUNREACH');
  });

  it('servers answer with the pod and the peer they saw; tallies count peers per pod', () => {
    expect(probeAnswer('x/b1', '198.19.129.2')).toBe('x/b1 198.19.129.2\n');
    expect(parseProbeAnswer('x/b1 198.19.129.2\n')).toEqual({ answer: 'x/b1', peer: '198.19.129.2' });
    // A server from before peers were reported.
    expect(parseProbeAnswer('x/b1\n')).toEqual({ answer: 'x/b1' });
    const s = summarise([
      { ok: true, answer: 'x/b1', peer: '198.19.129.2', ms: 1 },
      { ok: true, answer: 'x/b1', peer: '198.18.255.1', ms: 1 },
      { ok: true, answer: 'x/b2', peer: '198.19.129.2', ms: 1 },
      { ok: true, answer: 'x/b1', peer: '198.19.129.2', ms: 1 },
    ]);
    expect(s.peers).toEqual({
      'x/b1': { '198.19.129.2': 2, '198.18.255.1': 1 },
      'x/b2': { '198.19.129.2': 1 },
    });
  });
});
