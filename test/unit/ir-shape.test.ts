/**
 * IR invariants every backend relies on: shared, stably named, well-formed sets; per-node slices;
 * interface names within IFNAMSIZ; the address plan; service tables; placement; determinism.
 */
import { describe, expect, it } from 'vitest';
import {
  allocate,
  allocateAddresses,
  buildIR,
  INFRA_RANGE,
  isPodAddress,
  POD_RANGE,
  SERVICE_RANGE,
} from '../../src/calc/index.js';
import { irForNode } from '../../src/ir/slice.js';
import type { IR, Rule } from '../../src/ir/types.js';
import {
  cidrContains,
  formatAddress,
  parseAddress,
  parseCidr,
  type Address,
  type Cidr,
} from '../../src/util/ip.js';
import {
  globalPolicy,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  service,
  type Manifest,
  compileIR,
} from '../support/manifests.js';

function allRules(ir: IR): Rule[] {
  return ir.ruleSets.flatMap((rs) => [...rs.globalRules, ...rs.kubernetesRules]);
}

function rulesOf(ir: IR, policyName: string): Rule[] {
  return allRules(ir).filter((r) => r.policy.name === policyName);
}

function setOf(ir: IR, id: string | undefined): string[] {
  const s = ir.ipSets.find((x) => x.id === id);
  if (!s) throw new Error(`no IpSet ${String(id)}`);
  return s.cidrs;
}

function addr(s: string): Address {
  const a = parseAddress(s);
  if (!a) throw new Error(`bad address ${s}`);
  return a;
}

function cidr(s: string): Cidr {
  const c = parseCidr(s);
  if (!c) throw new Error(`bad cidr ${s}`);
  return c;
}

/** [first, last] address of a CIDR as bigints (IPv4 and IPv6 compared within their family). */
function bounds(c: Cidr): [bigint, bigint] {
  const bits = BigInt(c.family === 4 ? 32 : 128);
  const size = 1n << (bits - BigInt(c.prefix));
  return [c.base, c.base + size - 1n];
}

const shopManifests = (bLabels: Record<string, string> = { app: 'b' }): Manifest[] => [
  namespace('shop', { team: 'shop' }),
  namespace('other', { team: 'other' }),
  pod('shop', 'a', { labels: { app: 'a' }, ports: [{ name: 'http', containerPort: 8080 }] }),
  pod('shop', 'b', { labels: bLabels, ports: [{ name: 'http', containerPort: 9090 }] }),
  pod('shop', 'c', { labels: { app: 'c' } }),
  pod('other', 'a', { labels: { app: 'a' } }),
  pod('other', 'b', { labels: { app: 'b' } }),
  networkPolicy('shop', 'p1', {
    podSelector: { matchLabels: { app: 'a' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }],
  }),
  networkPolicy('shop', 'p2', {
    podSelector: { matchLabels: { app: 'c' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }], ports: [{ port: 80 }] }],
  }),
  networkPolicy('other', 'p3', {
    podSelector: {},
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }],
  }),
  networkPolicy('shop', 'ns-peer', {
    podSelector: { matchLabels: { app: 'a' } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] }],
  }),
  networkPolicy('other', 'ns-peer', {
    podSelector: { matchLabels: { app: 'a' } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'other' } } }] }],
  }),
  networkPolicy('shop', 'egress-http', {
    podSelector: { matchLabels: { app: 'c' } },
    policyTypes: ['Egress'],
    egress: [
      {
        to: [
          { ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.0.0/24', '198.18.128.0/17'] } },
          { ipBlock: { cidr: '198.18.0.0/20' } },
          { podSelector: {} },
        ],
        ports: [{ port: 'http' }],
      },
    ],
  }),
  globalPolicy('guard', {
    order: 1,
    ingress: [
      { action: 'Log', from: [{ nets: ['198.18.0.0/15', '198.18.10.0/24'], notNets: ['198.18.3.0/24'] }] },
      { action: 'Pass', from: [{ podSelector: { matchLabels: { app: 'b' } }, nets: ['198.18.0.0/16'] }] },
    ],
  }),
  prefilter('blocklist', {
    cidrs: ['198.18.200.0/24', '198.18.200.128/25', '198.18.201.0/24', '198.18.255.7/32'],
  }),
];

describe('IpSets', () => {
  it('rules with the same peers share one set (same id), across policies', () => {
    const ir = compileIR(modelOf(shopManifests()));
    const p1 = rulesOf(ir, 'p1');
    const p2 = rulesOf(ir, 'p2');
    expect(p1.length).toBeGreaterThan(0);
    expect(p2.length).toBeGreaterThan(0);
    expect(new Set([...p1, ...p2].map((r) => r.peerSet)).size).toBe(1);
    expect(p1[0]?.peerSet).toBeDefined();
    // Same bare podSelector in another namespace: scoped differently, so a different set.
    const p3 = rulesOf(ir, 'p3');
    expect(p3[0]?.peerSet).toBeDefined();
    expect(p3[0]?.peerSet).not.toBe(p1[0]?.peerSet);
    expect(setOf(ir, p1[0]?.peerSet)).not.toEqual(setOf(ir, p3[0]?.peerSet));
    // A namespaceSelector peer is not scoped by the policy namespace: shared across namespaces.
    const nsPeer = ir.ruleSets
      .flatMap((rs) => rs.kubernetesRules)
      .filter((r) => r.policy.name === 'ns-peer')
      .map((r) => r.peerSet);
    expect(nsPeer.length).toBe(2);
    expect(new Set(nsPeer).size).toBe(1);
    // Every set is unique by id.
    expect(new Set(ir.ipSets.map((s) => s.id)).size).toBe(ir.ipSets.length);
  });

  it('set ids stay the same when a label change alters membership; the members change', () => {
    const before = compileIR(modelOf(shopManifests({ app: 'b' })));
    const after = compileIR(modelOf(shopManifests({ app: 'x' })));
    const idBefore = rulesOf(before, 'p1')[0]?.peerSet;
    const idAfter = rulesOf(after, 'p1')[0]?.peerSet;
    expect(idBefore).toBeDefined();
    expect(idAfter).toBe(idBefore);
    expect(setOf(before, idBefore)).toHaveLength(1);
    expect(setOf(after, idAfter)).toEqual([]);
    // Rule ids are stable too.
    expect(rulesOf(after, 'p1').map((r) => r.id)).toEqual(rulesOf(before, 'p1').map((r) => r.id));
  });

  it('every set id fits ipset names (≤ 31 characters)', () => {
    const ir = compileIR(modelOf(shopManifests()));
    expect(ir.ipSets.length).toBeGreaterThan(3);
    expect(ir.ipPortSets.length).toBeGreaterThan(0);
    for (const s of [...ir.ipSets, ...ir.ipPortSets]) expect(s.id.length, s.id).toBeLessThanOrEqual(31);
  });

  it('cidrs in every IpSet are normalised, sorted and disjoint', () => {
    const ir = compileIR(modelOf(shopManifests()));
    const withSeveral = ir.ipSets.filter((s) => s.cidrs.length > 1);
    expect(withSeveral.length).toBeGreaterThan(1);
    for (const s of ir.ipSets) {
      const parsed = s.cidrs.map(cidr);
      // Normalised: re-formatting gives the same text (host bits clear).
      parsed.forEach((c, i) =>
        expect(`${formatAddress({ family: c.family, value: c.base })}/${c.prefix}`).toBe(s.cidrs[i]),
      );
      for (let i = 1; i < parsed.length; i++) {
        const prev = parsed[i - 1] as Cidr;
        const cur = parsed[i] as Cidr;
        if (prev.family !== cur.family) {
          expect(prev.family, `${s.id}: IPv4 before IPv6`).toBe(4);
          continue;
        }
        expect(
          bounds(prev)[1] < bounds(cur)[0],
          `${s.id}: ${s.cidrs[i - 1]} before and apart from ${s.cidrs[i]}`,
        ).toBe(true);
      }
    }
  });

  it('ipBlock except ranges are subtracted in the set itself', () => {
    const ir = compileIR(modelOf(shopManifests()));
    const egress = rulesOf(ir, 'egress-http');
    expect(egress.length).toBeGreaterThan(0);
    const members = setOf(ir, egress[0]?.peerSet).map(cidr);
    const inSet = (a: string): boolean => members.some((c) => cidrContains(c, addr(a)));
    expect(inSet('198.18.0.5')).toBe(true); // excepted by the first block, but inside the second
    expect(inSet('198.18.20.1')).toBe(true);
    expect(inSet('198.18.200.1')).toBe(false); // in the except /17, not in the /20
    expect(inSet('198.19.0.1')).toBe(false);
  });
});

describe('irForNode', () => {
  it('carries only that node’s endpoints’ rule sets and exactly the sets they reference', () => {
    const ir = compileIR(modelOf(shopManifests()), { nodeCount: 2 });
    expect(ir.nodes.map((n) => n.name)).toEqual(['node-1', 'node-2']);
    const idsSeen = new Set<string>();
    for (const node of ir.nodes.map((n) => n.name)) {
      const slice = irForNode(ir, node);
      const local = new Set(ir.endpoints.filter((e) => e.node === node).map((e) => e.id));
      expect(local.size).toBeGreaterThan(0);
      expect(new Set(slice.ruleSets.map((rs) => rs.endpoint))).toEqual(local);
      expect(slice.ruleSets).toEqual(ir.ruleSets.filter((rs) => local.has(rs.endpoint)));
      const referenced = new Set<string>();
      const referencedPorts = new Set<string>();
      for (const r of allRules(slice)) {
        if (r.peerSet) referenced.add(r.peerSet);
        if (r.peerPortSet) referencedPorts.add(r.peerPortSet);
      }
      for (const p of slice.prefilters) referenced.add(p.set);
      expect(new Set(slice.ipSets.map((s) => s.id))).toEqual(referenced);
      expect(new Set(slice.ipPortSets.map((s) => s.id))).toEqual(referencedPorts);
      for (const s of slice.ipSets) idsSeen.add(s.id);
    }
    // Some set is needed on one node only, or the slicing would prove nothing.
    const perNode = ir.nodes.map((n) => new Set(irForNode(ir, n.name).ipSets.map((s) => s.id)));
    expect(perNode[0]).not.toEqual(perNode[1]);
    expect(idsSeen).toEqual(new Set(ir.ipSets.map((s) => s.id)));
  });

  it('carries only the prefilters installed on that node', () => {
    const ir = compileIR(
      modelOf([
        pod('default', 'a', { node: 'n1' }),
        pod('default', 'b', { node: 'n2' }),
        prefilter('everywhere', { cidrs: ['198.18.200.0/24'] }),
        prefilter('n2-only', { nodes: ['n2'], cidrs: ['198.18.201.0/24'] }),
      ]),
    );
    expect(irForNode(ir, 'n1').prefilters.map((p) => p.name)).toEqual(['everywhere']);
    expect(irForNode(ir, 'n2').prefilters.map((p) => p.name)).toEqual(['everywhere', 'n2-only']);
    expect(irForNode(ir, 'n1').ipSets.map((s) => s.cidrs)).toEqual([['198.18.200.0/24']]);
  });
});

describe('endpoints', () => {
  const many = (n: number): Manifest[] => {
    const out: Manifest[] = [namespace('a'), namespace('b')];
    for (let i = 0; i < n; i++) out.push(pod(i % 2 ? 'a' : 'b', `pod-${i}`));
    return out;
  };

  it('host interface names are at most 15 characters and unique', () => {
    const ir = compileIR(modelOf(many(300)));
    const names = ir.endpoints.map((e) => e.hostInterface);
    expect(names).toHaveLength(300);
    for (const n of names) {
      expect(n.length, n).toBeLessThanOrEqual(15);
      expect(n).toMatch(/^[a-zA-Z0-9_-]+$/);
    }
    expect(new Set(names).size).toBe(300);
  });

  it('host interface names are stable for an endpoint whatever else changes', () => {
    const one = compileIR(modelOf(many(5)));
    const two = compileIR(modelOf(many(9)), { nodeCount: 4 });
    for (const e of one.endpoints)
      expect(two.endpoints.find((x) => x.id === e.id)?.hostInterface).toBe(e.hostInterface);
  });

  it('allocates pod addresses from 198.18.0.0/16, never the infrastructure /24, without duplicates', () => {
    const ir = compileIR(modelOf(many(50)));
    const addrs = ir.endpoints.flatMap((e) => e.addresses);
    expect(addrs).toHaveLength(50);
    expect(new Set(addrs).size).toBe(50);
    for (const a of addrs) {
      expect(cidrContains(POD_RANGE, addr(a)), a).toBe(true);
      expect(cidrContains(INFRA_RANGE, addr(a)), a).toBe(false);
      expect(isPodAddress(a)).toBe(true);
    }
  });

  it('the allocator skips the infrastructure /24 even when it is all that is left', () => {
    const used = new Set<string>();
    const base = POD_RANGE.base;
    for (let off = 0n; off < 255n * 256n; off++) used.add(formatAddress({ family: 4, value: base + off }));
    expect(() => allocateAddresses(POD_RANGE, 1, used, INFRA_RANGE)).toThrow(/exhausted/);
    used.delete('198.18.254.254');
    expect(allocateAddresses(POD_RANGE, 1, used, INFRA_RANGE)).toEqual(['198.18.254.254']);
  });

  it('honours status.podIP and never allocates an address a pod already declares', () => {
    const ir = compileIR(
      modelOf([
        pod('default', 'a'),
        pod('default', 'b', { ip: '198.18.0.2' }),
        pod('default', 'c'),
        pod('default', 'd', { ip: '198.18.0.3' }),
        pod('default', 'e'),
      ]),
    );
    const addr = Object.fromEntries(ir.endpoints.map((e) => [e.name, e.addresses]));
    expect(addr.b).toEqual(['198.18.0.2']);
    expect(addr.d).toEqual(['198.18.0.3']);
    const all = ir.endpoints.flatMap((e) => e.addresses);
    expect(new Set(all).size).toBe(5);
  });

  it('keeps previous addresses stable when pods are added before them', () => {
    const first = compileIR(modelOf([pod('default', 'm'), pod('default', 'n')]));
    const previous = Object.fromEntries(first.endpoints.map((e) => [e.id, e.addresses[0] as string]));
    const grown = modelOf([pod('default', 'a'), pod('default', 'm'), pod('default', 'n')]);
    const second = buildIR(grown, allocate(grown, { podAddresses: previous }));
    for (const [id, a] of Object.entries(previous))
      expect(second.endpoints.find((e) => e.id === id)?.addresses).toEqual([a]);
    const fresh = second.endpoints.find((e) => e.id === 'default/a')?.addresses[0];
    expect(fresh).toBeDefined();
    expect(Object.values(previous)).not.toContain(fresh);
    // Without `previous`, `a` sorts first and would take m's address: the option is what keeps it.
    const unpinned = compileIR(modelOf([pod('default', 'a'), pod('default', 'm'), pod('default', 'n')]));
    expect(unpinned.endpoints.find((e) => e.id === 'default/m')?.addresses).not.toEqual([
      previous['default/m'],
    ]);
  });

  it('a declared podIP wins over another pod’s previous address', () => {
    const model = modelOf([pod('default', 'old'), pod('default', 'new', { ip: '198.18.0.9' })]);
    const ir = buildIR(model, allocate(model, { podAddresses: { 'default/old': '198.18.0.9' } }));
    const addr = Object.fromEntries(ir.endpoints.map((e) => [e.name, e.addresses[0]]));
    expect(addr.new).toBe('198.18.0.9');
    expect(addr.old).not.toBe('198.18.0.9');
  });

  it('endpoints carry namespace labels, including kubernetes.io/metadata.name', () => {
    const ir = compileIR(
      modelOf([namespace('shop', { team: 'shop' }), pod('shop', 'web', { labels: { app: 'web' } })]),
    );
    expect(ir.endpoints[0]).toMatchObject({
      id: 'shop/web',
      labels: { app: 'web' },
      namespaceLabels: { team: 'shop', 'kubernetes.io/metadata.name': 'shop' },
    });
  });
});

describe('placement', () => {
  it('spreads unplaced pods evenly over the generated nodes', () => {
    const pods = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => pod('default', n));
    for (const nodeCount of [1, 2, 3]) {
      const ir = compileIR(modelOf(pods), { nodeCount });
      expect(ir.nodes.map((n) => n.name)).toEqual(
        Array.from({ length: nodeCount }, (_, i) => `node-${i + 1}`),
      );
      const load = new Map<string, number>();
      for (const e of ir.endpoints) load.set(e.node, (load.get(e.node) ?? 0) + 1);
      expect([...load.values()]).toEqual(Array<number>(nodeCount).fill(6 / nodeCount));
    }
  });

  it('honours spec.nodeName, creating that node even beyond nodeCount', () => {
    const ir = compileIR(
      modelOf([
        pod('default', 'pinned', { node: 'worker-7' }),
        pod('default', 'also-pinned', { node: 'worker-7' }),
        pod('default', 'free-1'),
        pod('default', 'free-2'),
      ]),
      { nodeCount: 1 },
    );
    expect(ir.nodes.map((n) => n.name)).toEqual(['worker-7']);
    expect(ir.endpoints.every((e) => e.node === 'worker-7')).toBe(true);

    const two = compileIR(
      modelOf([pod('default', 'pinned', { node: 'worker-7' }), pod('default', 'x'), pod('default', 'y')]),
      { nodeCount: 2 },
    );
    expect(two.nodes.map((n) => n.name)).toEqual(['node-1', 'worker-7']);
    const node = Object.fromEntries(two.endpoints.map((e) => [e.name, e.node]));
    expect(node.pinned).toBe('worker-7');
    // The least loaded node gets the next pod.
    expect([node.x, node.y].sort()).toEqual(['node-1', 'node-1']);
  });

  it('keeps previous placements', () => {
    const model = modelOf([pod('default', 'a'), pod('default', 'b')]);
    const previous = { podNodes: { 'default/a': 'node-2', 'default/b': 'node-2' } };
    const ir = buildIR(model, allocate(model, previous, { nodeCount: 2 }));
    expect(ir.endpoints.map((e) => e.node)).toEqual(['node-2', 'node-2']);
  });

  it('gives nodes fabric addresses in the infrastructure /24', () => {
    const ir = compileIR(modelOf([pod('default', 'a')]), { nodeCount: 3 });
    const addrs = ir.nodes.map((n) => n.address);
    expect(new Set(addrs).size).toBe(3);
    for (const a of addrs) expect(cidrContains(INFRA_RANGE, addr(a))).toBe(true);
  });
});

describe('services', () => {
  const svcManifests = (): Manifest[] => [
    namespace('shop'),
    namespace('other'),
    pod('shop', 'one', {
      labels: { app: 'api' },
      ip: '198.18.5.1',
      ports: [{ name: 'http', containerPort: 8080 }],
    }),
    pod('shop', 'two', {
      labels: { app: 'api' },
      ip: '198.18.5.2',
      ports: [{ name: 'http', containerPort: 9090 }],
    }),
    pod('shop', 'nameless', { labels: { app: 'api' }, ip: '198.18.5.3', ports: [{ containerPort: 8080 }] }),
    pod('other', 'three', {
      labels: { app: 'api' },
      ip: '198.18.6.1',
      ports: [{ name: 'http', containerPort: 7070 }],
    }),
    service('shop', 'api', {
      selector: { app: 'api' },
      ports: [
        { name: 'web', port: 80, targetPort: 'http' },
        { name: 'raw', port: 81, targetPort: 8081 },
      ],
    }),
    service('shop', 'fixed', { clusterIP: '198.19.0.2', selector: { app: 'api' }, ports: [{ port: 443 }] }),
    service('other', 'auto', { selector: { app: 'api' }, ports: [{ port: 53, protocol: 'UDP' }] }),
  ];

  it('allocates VIPs from 198.19.0.0/17, honours clusterIP and never hands it out again', () => {
    const ir = compileIR(modelOf(svcManifests()));
    const vip = Object.fromEntries(ir.services.map((s) => [s.service, s.address]));
    expect(vip['shop/fixed']).toBe('198.19.0.2');
    const addresses = [...new Set(ir.services.map((s) => s.address))];
    expect(addresses).toHaveLength(3);
    for (const a of addresses) expect(cidrContains(SERVICE_RANGE, addr(a)), a).toBe(true);
    // Every port of one service shares its address.
    expect(new Set(ir.services.filter((s) => s.service === 'shop/api').map((s) => s.address)).size).toBe(1);
  });

  it('resolves a named targetPort per backend pod and skips pods without that name', () => {
    const ir = compileIR(modelOf(svcManifests()));
    const web = ir.services.find((s) => s.service === 'shop/api' && s.port === 80);
    expect(web).toMatchObject({ id: 'shop/api:80/TCP', portName: 'web', protocol: 'TCP' });
    expect(web?.backends).toEqual([
      { endpoint: 'shop/one', address: '198.18.5.1', port: 8080, node: 'node-1' },
      { endpoint: 'shop/two', address: '198.18.5.2', port: 9090, node: 'node-2' },
    ]);
    const raw = ir.services.find((s) => s.service === 'shop/api' && s.port === 81);
    expect(raw?.backends.map((b) => [b.endpoint, b.port])).toEqual([
      ['shop/nameless', 8081],
      ['shop/one', 8081],
      ['shop/two', 8081],
    ]);
    // targetPort defaults to port; a selector only picks pods of the service's namespace.
    expect(ir.services.find((s) => s.service === 'shop/fixed')?.backends.map((b) => b.port)).toEqual([
      443, 443, 443,
    ]);
    expect(ir.services.find((s) => s.service === 'other/auto')?.backends).toEqual([
      { endpoint: 'other/three', address: '198.18.6.1', port: 53, node: 'node-1' },
    ]);
  });

  it('keeps previous VIPs stable', () => {
    const model = modelOf(svcManifests());
    const previous = { serviceAddresses: { 'other/auto': '198.19.7.7', 'shop/api': '198.19.7.8' } };
    const ir = buildIR(model, allocate(model, previous));
    const vip = Object.fromEntries(ir.services.map((s) => [s.service, s.address]));
    expect(vip['other/auto']).toBe('198.19.7.7');
    expect(vip['shop/api']).toBe('198.19.7.8');
  });
});

describe('shape and determinism', () => {
  it('has one rule set per endpoint and direction, sorted by endpoint then direction', () => {
    const ir = compileIR(modelOf(shopManifests()));
    const keys = ir.ruleSets.map((rs) => `${rs.endpoint}|${rs.direction}`);
    const expected = ir.endpoints.flatMap((e) => [`${e.id}|egress`, `${e.id}|ingress`]);
    expect(keys).toEqual(expected);
    expect([...keys].sort()).toEqual(keys);
  });

  it('every set a rule references exists', () => {
    const ir = compileIR(modelOf(shopManifests()));
    const ip = new Set(ir.ipSets.map((s) => s.id));
    const port = new Set(ir.ipPortSets.map((s) => s.id));
    for (const r of allRules(ir)) {
      if (r.peerSet) expect(ip.has(r.peerSet), r.id).toBe(true);
      if (r.peerPortSet) expect(port.has(r.peerPortSet), r.id).toBe(true);
    }
    for (const p of ir.prefilters) expect(ip.has(p.set)).toBe(true);
  });

  it('does not depend on the order of the input manifests', () => {
    const manifests = shopManifests();
    const forward = compileIR(modelOf(manifests));
    const backward = compileIR(modelOf([...manifests].reverse()));
    expect(JSON.stringify(backward)).toBe(JSON.stringify(forward));
  });
});
