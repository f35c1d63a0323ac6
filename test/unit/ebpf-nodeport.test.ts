/**
 * The node-port load balancer without a kernel: map layouts (the programs' offsets), the
 * generated tcx programs (deterministic, the node's addresses in the code, what each direction
 * may touch), and what a node's maps hold under each traffic policy; plus the connect-time load
 * balancer's keys for node ports and load-balancer addresses, and its refusal errno.
 */
import { describe, expect, it } from 'vitest';
import { disassemble } from '../../src/bpf/index.js';
import {
  NAT_FLAG,
  natKey,
  natValue,
  NP_BACKEND_REMOTE,
  npAffinityKey,
} from '../../src/dataplane/ebpf/nodeport-layout.js';
import { addressAsLoaded, nodePortProgram } from '../../src/dataplane/ebpf/nodeport-programs.js';
import { desiredNodePorts, nodePortBackends } from '../../src/dataplane/ebpf/nodeport-sync.js';
import { programHash } from '../../src/dataplane/ebpf/program.js';
import { renderNode } from '../../src/dataplane/ebpf/render.js';
import { withOutsideAddresses } from '../../src/dataplane/ebpf/services-outside.js';
import { servicePrograms } from '../../src/dataplane/ebpf/services-programs.js';
import { desiredServices, planServiceSync } from '../../src/dataplane/ebpf/services-sync.js';
import type { IR, ServicePortTable } from '../../src/ir/types.js';

const ADDRESSES = { own: '198.19.128.1', snat: '198.18.255.1' };

function web(over: Partial<ServicePortTable> = {}): ServicePortTable {
  return {
    id: 's/web:80/TCP',
    service: 's/web',
    address: '198.19.0.10',
    port: 80,
    protocol: 'TCP',
    affinity: { mode: 'None' },
    backends: [
      { endpoint: 's/b2', address: '198.18.0.12', port: 8080, node: 'beta' },
      { endpoint: 's/b1', address: '198.18.0.11', port: 8080, node: 'alpha' },
    ],
    nodePort: 30080,
    loadBalancerIPs: ['198.19.192.10'],
    ...over,
  };
}

function ir(services: ServicePortTable[]): IR {
  return {
    version: 1,
    nodes: [
      { name: 'alpha', address: '198.18.255.1', externalAddress: '198.19.128.1' },
      { name: 'beta', address: '198.18.255.2', externalAddress: '198.19.128.2' },
      { name: 'gamma', address: '198.18.255.3' },
    ],
    endpoints: [],
    ipSets: [],
    ipPortSets: [],
    ruleSets: [],
    services,
    prefilters: [],
  };
}

describe('ebpf node ports: layouts', () => {
  it('keys and values have the sizes and offsets the programs use', () => {
    expect(natKey.size).toBe(16);
    expect(natKey.offsets).toEqual({ saddr: 0, daddr: 4, sport: 8, dport: 10, proto: 12, pad: 13, pad2: 14 });
    expect(natValue.size).toBe(16);
    expect(natValue.offsets).toEqual({ saddr: 0, daddr: 4, sport: 8, dport: 10, flags: 12 });
    expect(npAffinityKey.size).toBe(8);
  });

  it('encodes addresses and ports in network order, as the packet carries them', () => {
    const b = Buffer.alloc(natKey.size);
    natKey.encode(
      { saddr: '198.19.129.5', daddr: '198.19.128.1', sport: 40000, dport: 30080, proto: 6, pad: 0, pad2: 0 },
      b,
      0,
    );
    expect(b.subarray(0, 13).toString('hex')).toBe('c6138105' + 'c6138001' + '9c40' + '7580' + '06');
    expect(addressAsLoaded('198.19.128.1')).toBe(b.readUInt32LE(4));
  });
});

describe('ebpf node ports: programs', () => {
  it('ingress chooses, records and rewrites; it is deterministic and carries the node addresses', () => {
    const a = nodePortProgram('ingress', ADDRESSES);
    expect(programHash(a)).toBe(programHash(nodePortProgram('ingress', ADDRESSES)));
    expect(programHash(a)).not.toBe(
      programHash(nodePortProgram('ingress', { ...ADDRESSES, own: '198.19.128.9' })),
    );
    expect([...a.mapNames].sort()).toEqual(['np_affinity', 'np_backends', 'np_nat', 'np_svc']);
    const listing = disassemble(a);
    for (const call of [
      'get_prandom_u32',
      'ktime_get_ns',
      'l4_csum_replace',
      'l3_csum_replace',
      'skb_store_bytes',
      'redirect_neigh',
      'map_update_elem',
    ])
      expect(listing).toContain(call);
    // The fabric address (source of connections to remote backends) and the own address, as loaded.
    const imms = a.instructions.map((i) => i.imm >>> 0);
    expect(imms).toContain(addressAsLoaded(ADDRESSES.snat));
    expect(imms).toContain(addressAsLoaded(ADDRESSES.own));
  });

  it('egress only reads the translation map and rewrites replies', () => {
    const e = nodePortProgram('egress', ADDRESSES);
    expect(e.mapNames).toEqual(['np_nat']);
    const listing = disassemble(e);
    expect(listing).not.toContain('map_update_elem');
    expect(listing).not.toContain('redirect_neigh');
    expect(listing).toContain('l4_csum_replace');
  });
});

describe('ebpf node ports: what a node holds', () => {
  it('Cluster: every backend, those on other nodes marked for source translation', () => {
    expect(nodePortBackends(web(), 'alpha')).toEqual([
      { addr: '198.18.0.11', port: 8080, pad: 0 },
      { addr: '198.18.0.12', port: 8080, pad: NP_BACKEND_REMOTE },
    ]);
  });

  it('Local: only the backends on the node, none elsewhere (refused there)', () => {
    const local = web({ externalTrafficPolicy: 'Local' });
    expect(nodePortBackends(local, 'beta')).toEqual([{ addr: '198.18.0.12', port: 8080, pad: 0 }]);
    expect(nodePortBackends(local, 'gamma')).toEqual([]);
  });

  it("keys the node's external address and node port, and each load-balancer address and port", () => {
    const d = desiredNodePorts(ir([web(), web({ id: 's/web:53/SCTP', protocol: 'SCTP' })]), 'alpha');
    expect(d.ports.map((p) => [p.key.vip, p.key.port, p.key.proto])).toEqual([
      ['198.19.128.1', 30080, 6],
      ['198.19.192.10', 80, 6],
    ]);
    expect(d.vips).toEqual(['198.19.192.10']);
    expect(d.skipped).toEqual(['s/web:53/SCTP: SCTP is not translated from outside by the eBPF backend']);
    expect(d.addresses).toEqual({ own: '198.19.128.1', snat: '198.18.255.1' });
    // A node without an external address serves the load-balancer addresses routed to it.
    const g = desiredNodePorts(ir([web()]), 'gamma');
    expect(g.ports.map((p) => p.key.vip)).toEqual(['198.19.192.10']);
    expect(g.addresses).toEqual({ own: '198.18.255.3', snat: '198.18.255.3' });
  });

  it('carries the ClientIP timeout and nothing for cluster-only services', () => {
    const sticky = web({ affinity: { mode: 'ClientIP', timeoutSeconds: 30 } });
    const plain = web({ id: 's/in:80/TCP', nodePort: undefined, loadBalancerIPs: undefined });
    const d = desiredNodePorts(ir([sticky, plain]), 'beta');
    expect(d.ports.map((p) => p.affinity)).toEqual([30, 30]);
    const state = planServiceSync({ services: [], backends: [] }, d);
    expect(state.serviceWrites.map(([k, v]) => [k.vip, v.count, v.flags])).toEqual([
      ['198.19.128.2', 2, 0],
      ['198.19.192.10', 2, 0],
      ['198.19.192.10', 0, 1],
    ]);
  });

  it('compile shows the keys, backends and both programs of a node', () => {
    const text = renderNode(ir([web({ externalTrafficPolicy: 'Local' })]), 'alpha');
    expect(text).toContain('#   198.19.128.1:30080/TCP  s/web:80/TCP@node  1 backends (0 remote)');
    expect(text).toContain('# program sy_np_ingress: tcx ingress on the fabric interface');
    expect(text).toContain('# program sy_np_egress: tcx egress on the fabric interface');
    expect(renderNode(ir([web({ nodePort: undefined, loadBalancerIPs: undefined })]), 'alpha')).not.toContain(
      'sy_np_',
    );
  });

  it('the flags of a translation entry are distinct bits', () => {
    expect(NAT_FLAG.forward & NAT_FLAG.reverse & NAT_FLAG.redirect).toBe(0);
    expect(NAT_FLAG.forward | NAT_FLAG.reverse | NAT_FLAG.redirect).toBe(7);
  });
});

describe('ebpf services: node ports and load-balancer addresses at connect', () => {
  it('adds a key per node external address and load-balancer address, with every backend', () => {
    const model = ir([web({ externalTrafficPolicy: 'Local' })]);
    const d = withOutsideAddresses(desiredServices(model), model);
    expect(d.ports.map((p) => `${p.key.vip}:${p.key.port} ${p.backends.length}`)).toEqual([
      '198.19.0.10:80 2',
      '198.19.128.1:30080 2',
      '198.19.128.2:30080 2',
      '198.19.192.10:80 2',
    ]);
    expect(d.vips).toEqual(['198.19.0.10', '198.19.192.10']);
  });

  it('refuses with ECONNREFUSED (bpf_set_retval) rather than EPERM', () => {
    const connect = servicePrograms().find((p) => p.hook === 'connect4');
    expect(
      disassemble(connect?.program ?? ({ instructions: [], labels: {}, mapNames: [] } as never)),
    ).toContain('set_retval');
  });
});
