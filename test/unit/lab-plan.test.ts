import { describe, expect, it } from 'vitest';
import { LabError } from '../../src/lab/errors.js';
import { planChanges, planIsEmpty, plugBatches } from '../../src/lab/plan.js';
import { buildTopology, type Topology } from '../../src/lab/topology.js';
import { allocate, buildIR } from '../../src/calc/index.js';
import type { Model } from '../../src/model/index.js';
import { modelOf, namespace, pod, type Manifest, compileIR } from '../support/manifests.js';

const ports = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' as const },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' as const },
];

function xy(extra: Manifest[] = [], skip: string[] = []): Model {
  const pods = ['x/a', 'x/b', 'y/a', 'y/b']
    .filter((id) => !skip.includes(id))
    .map((id) => {
      const [ns, name] = id.split('/') as [string, string];
      return pod(ns, name, { labels: { pod: name }, ports });
    });
  return modelOf([namespace('x', { ns: 'x' }), namespace('y', { ns: 'y' }), ...pods, ...extra]);
}

/** Topology after an update, as `lab apply` computes it (previous allocations passed back). */
function next(prev: Topology, model: Model, prevModel: Model): Topology {
  const previous = allocate(prevModel, {}, { nodeCount: 2 });
  const ir = buildIR(model, allocate(model, previous, { nodeCount: 2 }));
  return buildTopology('demo', ir, prev);
}

describe('lab topology', () => {
  it('names namespaces sy-<lab>-…, spreads pods over the nodes and gives fabric addresses', () => {
    const t = buildTopology('demo', compileIR(xy(), { nodeCount: 2 }));
    expect(t.fabricNetns).toBe('sy-demo-fabric');
    expect(t.nodes.map((n) => [n.name, n.netns, n.address])).toEqual([
      ['node-1', 'sy-demo-node-1', '198.18.255.1'],
      ['node-2', 'sy-demo-node-2', '198.18.255.2'],
    ]);
    expect(t.pods.map((p) => p.netns)).toEqual(['sy-demo-x-a', 'sy-demo-x-b', 'sy-demo-y-a', 'sy-demo-y-b']);
    expect(new Set(t.pods.map((p) => p.node))).toEqual(new Set(['node-1', 'node-2']));
    for (const p of t.pods) {
      expect(p.address).toMatch(/^198\.18\./);
      expect(p.hostInterface.length).toBeLessThanOrEqual(15);
      expect(p.ports).toEqual([
        { port: 80, protocol: 'TCP' },
        { port: 80, protocol: 'UDP' },
      ]);
    }
  });

  it('serves 80/TCP for pods without ports and skips SCTP', () => {
    const m = modelOf([
      namespace('x'),
      pod('x', 'bare'),
      pod('x', 'sctp', {
        ports: [
          { containerPort: 9, protocol: 'SCTP' },
          { containerPort: 7, protocol: 'UDP' },
        ],
      }),
    ]);
    const t = buildTopology('demo', compileIR(m));
    expect(t.pods.find((p) => p.name === 'bare')?.ports).toEqual([{ port: 80, protocol: 'TCP' }]);
    expect(t.pods.find((p) => p.name === 'sctp')?.ports).toEqual([{ port: 7, protocol: 'UDP' }]);
  });

  it('refuses a status.podIP outside the pod range with a clear error', () => {
    const m = modelOf([namespace('x'), pod('x', 'a', { ip: '10.1.2.3' })]);
    expect(() => buildTopology('demo', compileIR(m))).toThrow(LabError);
    expect(() => buildTopology('demo', compileIR(m))).toThrow(
      /x\/a: address 10\.1\.2\.3 \(status\.podIP\) is outside .*198\.18\.0\.0\/16/,
    );
    const infra = modelOf([namespace('x'), pod('x', 'a', { ip: '198.18.255.9' })]);
    expect(() => buildTopology('demo', compileIR(infra))).toThrow(/reserved for nodes/);
  });

  it('honours status.podIP', () => {
    const m = modelOf([namespace('x'), pod('x', 'a', { ip: '198.18.7.7' })]);
    expect(buildTopology('demo', compileIR(m)).pods[0]?.address).toBe('198.18.7.7');
  });
});

describe('lab plan', () => {
  const base = xy();
  const t0 = buildTopology('demo', compileIR(base, { nodeCount: 2 }));

  it('creates everything from nothing: namespaces, fabric, nodes, pods', () => {
    const p = planChanges(undefined, t0);
    expect(p.createNetns).toEqual([
      'sy-demo-fabric',
      'sy-demo-node-1',
      'sy-demo-node-2',
      ...t0.pods.map((x) => x.netns),
      'sy-demo-outside.client',
    ]);
    expect(p.fabric?.lines).toContain('link add br0 type bridge');
    expect(p.fabric?.lines).toContain('link add f-node-1 type veth peer name fabric0 netns sy-demo-node-1');
    const a = t0.pods[0];
    if (!a) throw new Error('no pod');
    const nodeBatch = p.nodes.find((b) => b.netns === `sy-demo-${a.node}`);
    expect(nodeBatch?.lines).toContain(
      `link add ${a.hostInterface} address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns ${a.netns}`,
    );
    // Born closed: the host end stays down and unrouted until the pod is plugged.
    expect(nodeBatch?.lines.filter((l) => l.includes(a.hostInterface))).toEqual([
      `link add ${a.hostInterface} address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns ${a.netns}`,
      `link set ${a.hostInterface} addrgenmode none`,
    ]);
    expect(plugBatches(t0, [a.id])).toEqual([
      {
        netns: `sy-demo-${a.node}`,
        lines: [
          `link set ${a.hostInterface} up`,
          `route replace ${a.address}/32 dev ${a.hostInterface} scope link`,
        ],
      },
    ]);
    const remote = t0.pods.find((x) => x.node !== a.node);
    const remoteNode = t0.nodes.find((n) => n.name === remote?.node);
    expect(nodeBatch?.lines).toContain(
      `route replace ${remote?.address}/32 via ${remoteNode?.address} dev fabric0`,
    );
    expect(p.pods.find((b) => b.netns === a.netns)).toEqual({ netns: a.netns, address: a.address });
    expect(p.sysctls.find((s) => s.netns === `sy-demo-${a.node}`)?.entries).toEqual(
      expect.arrayContaining([
        ['net/ipv4/ip_forward', '1'],
        [`net/ipv4/conf/${a.hostInterface}/proxy_arp`, '1'],
        [`net/ipv4/neigh/${a.hostInterface}/proxy_delay`, '0'],
      ]),
    );
  });

  it('plans nothing when nothing changed', () => {
    const same = next(t0, base, base);
    const p = planChanges(t0, same);
    expect(planIsEmpty(p)).toBe(true);
    expect(p.probesChanged).toBe(false);
  });

  it('relabelling a pod changes nothing in the topology', () => {
    const relabelled = xy([], []);
    relabelled.pods = relabelled.pods.map((p) =>
      p.name === 'a' && p.namespace === 'x' ? { ...p, labels: { pod: 'z' } } : p,
    );
    expect(planIsEmpty(planChanges(t0, next(t0, relabelled, base)))).toBe(true);
  });

  it('adding a pod touches only that pod and the routes to it', () => {
    const grown = xy([pod('x', 'c', { labels: { pod: 'c' }, ports })]);
    const t1 = next(t0, grown, base);
    const p = planChanges(t0, t1);
    expect(p.addedPods.map((x) => x.id)).toEqual(['x/c']);
    expect(p.removedPods).toEqual([]);
    expect(p.createNetns).toEqual(['sy-demo-x-c']);
    const c = t1.pods.find((x) => x.id === 'x/c');
    const other = t1.nodes.find((n) => n.name !== c?.node);
    const own = t1.nodes.find((n) => n.name === c?.node);
    expect(p.nodes.find((b) => b.netns === other?.netns)?.lines).toEqual([
      `route replace ${c?.address}/32 via ${own?.address} dev fabric0`,
    ]);
    for (const old of t0.pods) expect(t1.pods.find((x) => x.id === old.id)).toEqual(old);
  });

  it('removing a pod unplugs it, deletes its namespace and its routes elsewhere', () => {
    const shrunk = xy([], ['y/b']);
    const p = planChanges(t0, next(t0, shrunk, base));
    const gone = t0.pods.find((x) => x.id === 'y/b');
    expect(p.removedPods.map((x) => x.id)).toEqual(['y/b']);
    expect(p.deleteNetns).toEqual(['sy-demo-y-b']);
    expect(p.unplug).toEqual([
      { netns: `sy-demo-${gone?.node}`, lines: [`link del ${gone?.hostInterface}`] },
    ]);
    const other = t0.nodes.find((n) => n.name !== gone?.node);
    expect(p.staleRoutes.find((b) => b.netns === other?.netns)?.lines).toEqual([
      `route del ${gone?.address}/32 via ${t0.nodes.find((n) => n.name === gone?.node)?.address} dev fabric0`,
    ]);
    expect(p.createNetns).toEqual([]);
  });

  it('recovering an interrupted run writes every fabric route again and drops routes to pods it knew', () => {
    // A killed run was adding y/c; the model no longer has it, and y/b is whole in the kernel.
    const known = [...t0.pods.map((x) => x.address), '198.18.9.9'];
    const p = planChanges(t0, t0, { resync: { addresses: known } });
    expect(p.addedPods).toEqual([]);
    expect(p.removedPods).toEqual([]);
    for (const n of t0.nodes) {
      const remote = t0.pods.filter((x) => x.node !== n.name);
      const via = (x: (typeof remote)[number]): string | undefined =>
        t0.nodes.find((o) => o.name === x.node)?.address;
      expect(p.nodes.find((b) => b.netns === n.netns)?.lines).toEqual([
        // The external address and the way back to the outside, written again too.
        `addr replace ${n.externalAddress}/24 dev fabric0`,
        'route replace 198.19.129.0/24 via 198.19.128.254 dev fabric0',
        ...remote.map((x) => `route replace ${x.address}/32 via ${via(x)} dev fabric0`),
      ]);
      expect(p.staleRoutes.find((b) => b.netns === n.netns)?.lines).toEqual([
        'route del 198.18.9.9/32 dev fabric0',
      ]);
    }
  });

  it('moving a pod to another node recreates it', () => {
    const a = t0.pods.find((x) => x.id === 'x/a');
    const target = t0.nodes.find((n) => n.name !== a?.node)?.name;
    const moved = xy();
    moved.pods = moved.pods.map((p) =>
      p.namespace === 'x' && p.name === 'a' ? { ...p, nodeName: target as string } : p,
    );
    const t1 = next(t0, moved, base);
    const p = planChanges(t0, t1);
    expect(p.removedPods.map((x) => x.id)).toEqual(['x/a']);
    expect(p.addedPods.map((x) => x.id)).toEqual(['x/a']);
    expect(p.deleteNetns).toEqual(['sy-demo-x-a']);
    expect(p.createNetns).toEqual(['sy-demo-x-a']);
    expect(t1.pods.find((x) => x.id === 'x/a')?.address).toBe(a?.address);
  });

  it('a node whose fabric address changes gets it re-set and every route through the fabric again', () => {
    const renumbered: Topology = {
      ...t0,
      nodes: t0.nodes.map((n, i) => ({ ...n, address: `198.18.255.${i + 11}` })),
    };
    const p = planChanges(t0, renumbered);
    const n1 = p.nodes.find((b) => b.netns === 'sy-demo-node-1')?.lines ?? [];
    expect(n1.slice(0, 2)).toEqual(['addr flush dev fabric0', 'addr add 198.18.255.11/24 dev fabric0']);
    const remote = t0.pods.filter((x) => x.node === 'node-2');
    for (const r of remote)
      expect(n1).toContain(`route replace ${r.address}/32 via 198.18.255.12 dev fabric0`);
    expect(p.addedPods).toEqual([]);
  });
});
