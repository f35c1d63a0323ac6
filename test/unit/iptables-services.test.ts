/** The iptables backend's service NAT, without a kernel: kube-proxy's chain layout, probabilities, affinity, rejects, incremental diff. */
import { describe, expect, it } from 'vitest';
import { diffPlan } from '../../src/dataplane/iptables/diff.js';
import type { KernelState, KernelTable } from '../../src/dataplane/iptables/kernel.js';
import { serviceChain, SERVICES_CHAIN, SERVICES_REJECT_CHAIN } from '../../src/dataplane/iptables/names.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import { tableKey } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { probability } from '../../src/dataplane/iptables/service-port.js';
import { servicesIR, withoutBackend } from './netfilter-services-fixture.js';

const ir = servicesIR();
const plan = planForNode(ir, 'node-1');

function table(p: NodePlan, name: 'nat' | 'filter') {
  const t = p.tables.find((x) => x.family === 4 && x.table === name);
  if (!t) throw new Error(`no ${name} table`);
  return t;
}

function chain(p: NodePlan, tableName: 'nat' | 'filter', name: string): readonly string[] {
  const c = table(p, tableName).chains.find((x) => x.name === name);
  if (!c) throw new Error(`no chain ${name}`);
  return c.rules;
}

/** A kernel holding exactly `p` (for diffs against it). */
function kernelOf(p: NodePlan): KernelState {
  const tables = new Map<string, KernelTable>();
  for (const t of p.tables) {
    tables.set(tableKey(t.family, t.table), {
      family: t.family,
      table: t.table,
      chains: new Map(t.chains.map((c) => [c.name, { rules: [...c.rules] }])),
      jumps: t.jumps.map((j) => ({ ...j, target: / -j (\S+)$/.exec(j.rule)?.[1] ?? '' })),
    });
  }
  return { sets: new Set(p.sets.map((s) => s.name)), tables };
}

describe('iptables services', () => {
  it('enters SY-SERVICES from nat PREROUTING and OUTPUT, one rule per service port with backends', () => {
    const nat = table(plan, 'nat');
    expect(nat.jumps.map((j) => j.builtin)).toEqual(['PREROUTING', 'OUTPUT', 'POSTROUTING']);
    const dispatch = chain(plan, 'nat', SERVICES_CHAIN);
    const web = ir.services.find((t) => t.id === 'x/web:80/TCP');
    expect(dispatch).toHaveLength(3);
    expect(dispatch).toContain(
      `-d ${web?.address}/32 -p tcp -m tcp --dport 80 -m comment --comment "x/web:80/TCP" -j ${serviceChain('x/web:80/TCP')}`,
    );
    expect(dispatch.some((r) => r.includes('x/empty'))).toBe(false);
  });

  it("picks backends with kube-proxy's 1/(n-i) probabilities, the last unconditionally, and DNATs per pod port", () => {
    // The first rule marks traffic from the node itself for masquerade.
    const [fromNode, ...svc] = chain(plan, 'nat', serviceChain('x/web:80/TCP'));
    expect(fromNode).toMatch(/^-m addrtype --src-type LOCAL .* -j MARK --or-mark 0x4000$/);
    expect(svc).toHaveLength(3);
    expect(svc[0]).toContain(`--probability ${probability(0, 3)}`);
    expect(svc[1]).toContain(`--probability ${probability(1, 3)}`);
    expect(svc[2]).not.toContain('statistic');
    expect(probability(0, 3)).toBe('0.3333333333');
    expect(probability(1, 3)).toBe('0.5000000000');
    const seps = svc.map((r) => / -j (SY-SEP-\S+)$/.exec(r)?.[1] as string);
    const dnat = seps.map((s) => chain(plan, 'nat', s)[1]);
    const b3 = ir.endpoints.find((e) => e.id === 'x/b3')?.addresses[0];
    expect(dnat[2]).toContain(`-j DNAT --to-destination ${b3}:8081`);
  });

  it('implements ClientIP affinity with recent lists per backend', () => {
    const svc = chain(plan, 'nat', serviceChain('x/sticky:81/TCP')).slice(1);
    expect(svc).toHaveLength(6);
    for (const r of svc.slice(0, 3))
      expect(r).toMatch(/-m recent --name SY-SEP-\S+ --rcheck --seconds 600 --reap .* -j SY-SEP-/);
    const sep = / -j (SY-SEP-\S+)$/.exec(svc[3] as string)?.[1] as string;
    expect(chain(plan, 'nat', sep)[1]).toContain(`-m recent --name ${sep} --set`);
  });

  it('rejects service ports without backends and undefined VIP ports in filter, before policy', () => {
    const filter = table(plan, 'filter');
    const rejects = chain(plan, 'filter', SERVICES_REJECT_CHAIN);
    expect(rejects[0]).toMatch(
      /-p tcp -m tcp --dport 80 .*has no endpoints.* -j REJECT --reject-with tcp-reset/,
    );
    // Three VIPs, a TCP reset and an ICMP rule each.
    expect(rejects.filter((r) => r.includes('port not defined'))).toHaveLength(6);
    // Inserted last, so first in FORWARD, ahead of SY-FORWARD's accept.
    const fwd = filter.jumps.filter((j) => j.builtin === 'FORWARD').map((j) => j.rule);
    expect(fwd[fwd.length - 1]).toContain(SERVICES_REJECT_CHAIN);
    expect(planForNode({ ...ir, services: [] }, 'node-1').tables.some((t) => t.table === 'nat')).toBe(false);
  });

  it('rewrites only the changed service chain (and drops the leaving backend chain) for one endpoint change', () => {
    const next = planForNode(withoutBackend(ir, 'x/web:80/TCP', 'x/b1'), 'node-1');
    const diff = diffPlan(next, plan, kernelOf(plan));
    expect(diff.sets).toEqual([]);
    expect(diff.tables.map((t) => t.key)).toEqual(['iptables/nat']);
    const change = diff.tables[0]?.change;
    expect(change?.write.map((c) => c.name)).toEqual([serviceChain('x/web:80/TCP')]);
    expect(change?.deleteChains).toHaveLength(1);
    expect(change?.deleteChains[0]).toMatch(/^SY-SEP-/);
    expect(change?.insertJumps).toEqual([]);
  });
});

describe('iptables service plan reuse', () => {
  it('renders the services once per IR service list and node, again when the list changes', () => {
    // An incremental IR hands unchanged services as the same array: the same table comes back.
    const first = planForNode(ir, 'node-1');
    const again = planForNode({ ...ir, endpoints: [...ir.endpoints] }, 'node-1');
    expect(table(again, 'nat')).toBe(table(first, 'nat'));
    const other = planForNode(ir, 'node-2');
    expect(table(other, 'nat')).not.toBe(table(first, 'nat'));
    expect(table(planForNode(ir, 'node-1'), 'nat')).toBe(table(first, 'nat'));
    const svc = ir.services.find((t) => t.backends.length > 0);
    const backend = svc?.backends[0];
    if (!svc || !backend) throw new Error('fixture has no service backend');
    const changed = planForNode(withoutBackend(ir, svc.id, backend.endpoint), 'node-1');
    expect(table(changed, 'nat')).not.toBe(table(first, 'nat'));
    expect(chain(changed, 'nat', serviceChain(svc.id))).not.toEqual(
      chain(first, 'nat', serviceChain(svc.id)),
    );
  });

  it("hands on every other service port's chains as the same objects when one service changes", () => {
    const nat = (p: NodePlan, name: string) => table(p, 'nat').chains.find((c) => c.name === name);
    const first = planForNode(ir, 'node-1');
    const [svc, other] = ir.services.filter((t) => (t.family ?? 4) === 4 && t.backends.length > 0);
    const backend = svc?.backends[0];
    if (!svc || !other || !backend) throw new Error('fixture has no two IPv4 services with backends');
    const changed = planForNode(withoutBackend(ir, svc.id, backend.endpoint), 'node-1');
    expect(nat(changed, serviceChain(svc.id))).not.toBe(nat(first, serviceChain(svc.id)));
    expect(nat(first, serviceChain(other.id))).toBeDefined();
    expect(nat(changed, serviceChain(other.id))).toBe(nat(first, serviceChain(other.id)));
  });
});
