/**
 * Connect-time load balancing, without a kernel: the generated sock_addr programs (deterministic,
 * the lookups and rewrites they must contain) and the service map sync plan (slots kept stable,
 * writes before count changes, ids not reused within one sync).
 */
import { describe, expect, it } from 'vitest';
import { codecs, disassemble } from '../../src/bpf/index.js';
import type { BackendKey, BackendValue, SvcKey, SvcValue } from '../../src/dataplane/ebpf/services-layout.js';
import { SVC_FLAG_LOCAL, SVC_FLAG_VIP, svcKey } from '../../src/dataplane/ebpf/services-layout.js';
import {
  serviceProgramHash,
  servicePrograms,
  SERVICE_HOOKS,
} from '../../src/dataplane/ebpf/services-programs.js';
import {
  desiredServices,
  planServiceSync,
  type CurrentServices,
  type ServiceSyncPlan,
} from '../../src/dataplane/ebpf/services-sync.js';
import type { IR, ServicePortTable } from '../../src/ir/types.js';

type Backends = [string, string, number][];

function table(
  over: Partial<Omit<ServicePortTable, 'backends'>> & {
    backends: Backends;
    nodeOf?: Record<string, string>;
  },
): ServicePortTable {
  return {
    id: over.id ?? 's/web:80/TCP',
    service: 's/web',
    address: over.address ?? '198.19.0.10',
    port: over.port ?? 80,
    protocol: over.protocol ?? 'TCP',
    affinity: over.affinity ?? { mode: 'None' },
    backends: over.backends.map(([endpoint, address, port]) => ({
      endpoint,
      address,
      port,
      ...(over.nodeOf?.[endpoint] ? { node: over.nodeOf[endpoint] } : {}),
    })),
    ...(over.internalTrafficPolicy ? { internalTrafficPolicy: over.internalTrafficPolicy } : {}),
  };
}

function ir(services: ServicePortTable[], nodes: IR['nodes'] = []): IR {
  return {
    version: 1,
    nodes,
    endpoints: [],
    ipSets: [],
    ruleSets: [],
    services,
    prefilters: [],
  } as unknown as IR;
}

/** The kernel's maps after a plan is applied to `current`. */
function applied(current: CurrentServices, plan: ServiceSyncPlan): CurrentServices {
  const svc = new Map(current.services.map(([k, v]) => [JSON.stringify(k), [k, v] as [SvcKey, SvcValue]]));
  const be = new Map(
    current.backends.map(([k, v]) => [JSON.stringify(k), [k, v] as [BackendKey, BackendValue]]),
  );
  for (const [k, v] of plan.backendWrites) be.set(JSON.stringify(k), [k, v]);
  for (const [k, v] of plan.serviceWrites) svc.set(JSON.stringify(k), [k, v]);
  for (const k of plan.serviceDeletes) expect(svc.delete(JSON.stringify(k))).toBe(true);
  for (const k of plan.backendDeletes) expect(be.delete(JSON.stringify(k))).toBe(true);
  return { services: [...svc.values()], backends: [...be.values()] };
}

const empty: CurrentServices = { services: [], backends: [] };

function backendsOf(state: CurrentServices, vip: string, port: number): string[] {
  const entry = state.services.find(([k]) => k.vip === vip && k.port === port);
  if (!entry) return [];
  const [, v] = entry;
  return Array.from({ length: v.count }, (_, slot) => {
    const b = state.backends.find(([k]) => k.id === v.id && k.slot === slot);
    return b ? `${b[1].addr}:${b[1].port}` : 'MISSING';
  });
}

describe('ebpf services: programs', () => {
  it('are deterministic and one per hook', () => {
    const a = servicePrograms();
    const b = servicePrograms();
    expect(a.map((p) => p.hook)).toEqual(SERVICE_HOOKS);
    expect(a.map(serviceProgramHash)).toEqual(b.map(serviceProgramHash));
    expect(a.map((p) => p.attachType)).toEqual([
      'cgroup_inet4_connect',
      'cgroup_udp4_sendmsg',
      'cgroup_udp4_recvmsg',
      'cgroup_inet4_getpeername',
      'cgroup_inet6_connect',
      'cgroup_udp6_sendmsg',
      'cgroup_udp6_recvmsg',
      'cgroup_inet6_getpeername',
    ]);
    for (const p of a) expect(p.name.length).toBeLessThanOrEqual(15);
  });

  it('connect4 looks up the service, picks a backend, remembers affinity and the reverse translation', () => {
    const connect = servicePrograms().find((p) => p.hook === 'connect4');
    if (!connect) throw new Error('no connect4');
    const listing = disassemble(connect.program);
    expect(connect.program.mapNames).toEqual([
      'svc',
      'svc_affinity',
      'svc_backends',
      'svc_revnat',
      'svc_pod_node',
    ]);
    for (const call of [
      'get_current_cgroup_id',
      'map_lookup_elem',
      'get_prandom_u32',
      'get_netns_cookie',
      'get_socket_cookie',
      'ktime_get_ns',
      'map_update_elem',
    ])
      expect(listing).toContain(call);
    expect(listing).toMatch(/%=/); // random % count
  });

  it('recvmsg4 and getpeername4 only read the reverse map', () => {
    for (const p of servicePrograms().filter((x) => x.hook === 'recvmsg4' || x.hook === 'getpeername4')) {
      expect(p.program.mapNames).toEqual(['svc_revnat']);
      const listing = disassemble(p.program);
      expect(listing).toContain('get_socket_cookie');
      expect(listing).toContain('map_lookup_elem');
    }
  });
});

describe('ebpf services: sync plan', () => {
  const web = (
    backends: Backends,
    extra: Partial<Omit<ServicePortTable, 'backends'>> & { nodeOf?: Record<string, string> } = {},
  ): ServicePortTable => table({ backends, ...extra });
  const three: [string, string, number][] = [
    ['s/b1', '198.18.0.11', 8080],
    ['s/b2', '198.18.0.12', 8080],
    ['s/b3', '198.18.0.13', 8080],
  ];

  it('creates services with VIP markers and backends in endpoint order', () => {
    const desired = desiredServices(
      ir([web(three), web(three, { id: 's/web:53/UDP', port: 53, protocol: 'UDP' })]),
    );
    const plan = planServiceSync(empty, desired);
    const state = applied(empty, plan);
    expect(backendsOf(state, '198.19.0.10', 80)).toEqual([
      '198.18.0.11:8080',
      '198.18.0.12:8080',
      '198.18.0.13:8080',
    ]);
    const marker = state.services.find(([k]) => k.port === 0);
    expect(marker?.[1].flags).toBe(SVC_FLAG_VIP);
    expect(state.services).toHaveLength(3);
    expect(new Set(state.services.filter(([k]) => k.port !== 0).map(([, v]) => v.id)).size).toBe(2);
  });

  it('is idempotent: a second sync plans nothing', () => {
    const desired = desiredServices(ir([web(three, { affinity: { mode: 'ClientIP', timeoutSeconds: 60 } })]));
    const state = applied(empty, planServiceSync(empty, desired));
    const again = planServiceSync(state, desired);
    expect(again).toEqual({ backendWrites: [], serviceWrites: [], serviceDeletes: [], backendDeletes: [] });
    expect(state.services.find(([k]) => k.port === 80)?.[1].affinity).toBe(60);
  });

  it('keeps the slots of backends that stay and shrinks the count before deleting slots', () => {
    const state = applied(empty, planServiceSync(empty, desiredServices(ir([web(three)]))));
    const plan = planServiceSync(
      state,
      desiredServices(ir([web([three[0], three[2]] as [string, string, number][])])),
    );
    // b1 stays in slot 0; b3 moves into b2's slot 1; slot 2 goes after the count drops to 2.
    expect(plan.backendWrites.map(([k, v]) => [k.slot, v.addr])).toEqual([[1, '198.18.0.13']]);
    expect(plan.serviceWrites.map(([, v]) => v.count)).toEqual([2]);
    expect(plan.backendDeletes.map((k) => k.slot)).toEqual([2]);
    expect(backendsOf(applied(state, plan), '198.19.0.10', 80)).toEqual([
      '198.18.0.11:8080',
      '198.18.0.13:8080',
    ]);
  });

  it('removes services that leave and does not reuse their id in the same sync', () => {
    const first = applied(empty, planServiceSync(empty, desiredServices(ir([web(three)]))));
    const oldId = first.services.find(([k]) => k.port === 80)?.[1].id;
    const other = web(three, { id: 's/other:80/TCP', address: '198.19.0.20' });
    const plan = planServiceSync(first, desiredServices(ir([other])));
    const next = applied(first, plan);
    expect(next.services.map(([k]) => k.vip)).toEqual(['198.19.0.20', '198.19.0.20']);
    expect(next.services.find(([k]) => k.port === 80)?.[1].id).not.toBe(oldId);
    expect(next.backends.every(([k]) => k.id !== oldId)).toBe(true);
  });

  it('a service without backends keeps its entry with count 0 (connects are refused)', () => {
    const state = applied(empty, planServiceSync(empty, desiredServices(ir([web([])]))));
    expect(state.services.find(([k]) => k.port === 80)?.[1].count).toBe(0);
  });

  it("internalTrafficPolicy Local: the service's entry is flagged, and each node with backends gets its own", () => {
    const nodes = ['node-b', 'node-a', 'node-c'].map((name, i) => ({ name, address: `198.18.255.${i + 1}` }));
    const local = web(three, {
      internalTrafficPolicy: 'Local',
      nodeOf: { 's/b1': 'node-a', 's/b2': 'node-b', 's/b3': 'node-a' },
    });
    const state = applied(empty, planServiceSync(empty, desiredServices(ir([local], nodes))));
    const entry = (node: number) => state.services.find(([k]) => k.port === 80 && k.node === node)?.[1];
    expect(entry(0)?.flags).toBe(SVC_FLAG_LOCAL);
    expect(entry(0)?.count).toBe(3); // a client in no known pod: every backend
    // Node indices follow node names: node-a 1, node-b 2, node-c 3 (no backend: no entry, refused).
    const backendsAt = (node: number): string[] => {
      const v = entry(node);
      return state.backends
        .filter(([k]) => k.id === v?.id)
        .sort((a, b) => a[0].slot - b[0].slot)
        .map(([, b]) => b.addr);
    };
    expect(backendsAt(1)).toEqual(['198.18.0.11', '198.18.0.13']);
    expect(backendsAt(2)).toEqual(['198.18.0.12']);
    expect(entry(3)).toBeUndefined();
    expect(entry(1)?.flags).toBe(0);
    // Cluster again: the per-node entries go, the flag is cleared.
    const cluster = web(three, { nodeOf: { 's/b1': 'node-a', 's/b2': 'node-b', 's/b3': 'node-a' } });
    const next = applied(state, planServiceSync(state, desiredServices(ir([cluster], nodes))));
    expect(next.services.filter(([k]) => k.port === 80).map(([k, v]) => [k.node, v.flags])).toEqual([[0, 0]]);
  });

  it('balances an IPv6 cluster IP over the IPv6 backends only, with its own VIP marker', () => {
    const mixed: [string, string, number][] = [
      ['s/b1', 'fd00:5957::11', 8080],
      ['s/b2', '198.18.0.12', 8080],
      ['s/b3', 'fd00:5957::13', 8080],
    ];
    const d = desiredServices(ir([web(mixed, { address: 'fd00:5957::10' })]));
    expect(d.skipped).toEqual([]);
    expect(d.vips).toEqual(['fd00:5957::10']);
    expect(d.ports.map((p) => p.backends.map((b) => b.addr))).toEqual([['fd00:5957::11', 'fd00:5957::13']]);
    const state = applied(empty, planServiceSync(empty, d));
    expect(backendsOf(state, 'fd00:5957::10', 80)).toEqual(['fd00:5957::11:8080', 'fd00:5957::13:8080']);
  });

  it('keys both families in 16 bytes: an IPv4 VIP is stored IPv4-mapped and read back as a dotted quad', () => {
    const key = { vip: '198.19.0.10', port: 80, proto: 6, node: 0 };
    const bytes = codecs.encode(svcKey, key);
    expect(bytes.subarray(0, 16).toString('hex')).toBe('00000000000000000000ffffc613000a');
    expect(svcKey.decode(bytes, 0)).toEqual(key);
  });
});
