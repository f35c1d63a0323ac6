/** The nftables backend's service NAT, without a kernel: vmap dispatch, numgen DNAT, affinity sets, rejects, incremental diff. */
import { describe, expect, it } from 'vitest';
import { diffRulesets } from '../../src/dataplane/nftables/diff.js';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import {
  backendChainName,
  NAT_PREROUTING_CHAIN,
  serviceChainName,
  SERVICE_REJECT_CHAIN,
  SERVICES_MAP,
} from '../../src/dataplane/nftables/services.js';
import { servicesIR, withoutBackend } from './netfilter-services-fixture.js';

const ir = servicesIR();
const rs = buildRuleset(ir, 'node-1');

function rules(name: string): string[] {
  const c = rs.chains.find((x) => x.name === name);
  if (!c) throw new Error(`no chain ${name}`);
  return c.rules;
}

describe('nftables services', () => {
  it('looks service ports up in one verdict map from a nat prerouting chain', () => {
    const pre = rs.chains.find((c) => c.name === NAT_PREROUTING_CHAIN);
    expect(pre?.spec).toBe('{ type nat hook prerouting priority -100; policy accept; }');
    expect(pre?.rules).toEqual([
      `ip daddr . meta l4proto . th dport vmap @${SERVICES_MAP}`,
      'ip daddr . meta l4proto . th dport vmap @nodeports',
    ]);
    const map = rs.maps.find((m) => m.name === SERVICES_MAP);
    const web = ir.services.find((t) => t.id === 'x/web:80/TCP');
    expect(map?.elements).toContain(`${web?.address} . tcp . 80 : goto ${serviceChainName('x/web:80/TCP')}`);
    expect(map?.elements.some((e) => e.includes('udp . 53'))).toBe(true);
    expect(map?.elements).toHaveLength(3);
  });

  it('DNATs with numgen over address . port, per-pod target ports', () => {
    const [rule] = rules(serviceChainName('x/web:80/TCP'));
    const addr = (id: string) => ir.endpoints.find((e) => e.id === id)?.addresses[0];
    expect(rule).toBe(
      `meta l4proto tcp counter dnat ip addr . port to numgen random mod 3 map { 0 : ${addr('x/b1')} . 8080, ` +
        `1 : ${addr('x/b2')} . 8080, 2 : ${addr('x/b3')} . 8081 } comment "x/web:80/TCP"`,
    );
  });

  it('implements ClientIP affinity with one dynamic timeout set per backend', () => {
    const table = ir.services.find((t) => t.id === 'x/sticky:81/TCP');
    if (!table) throw new Error('no sticky');
    const svc = rules(serviceChainName(table.id));
    expect(svc).toHaveLength(4);
    expect(svc[3]).toMatch(/^numgen random mod 3 vmap \{ 0 : goto sep-/);
    const sep = backendChainName(table.id, table.backends[0] as (typeof table.backends)[number]);
    const [dnat] = rules(sep);
    expect(dnat).toMatch(/^update @aff-[0-9a-f]{16} \{ ip saddr \} meta l4proto tcp counter dnat ip to /);
    const aff = rs.sets.filter((s) => s.name.startsWith('aff-'));
    expect(aff).toHaveLength(3);
    expect(aff[0]?.spec).toBe('{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }');
  });

  it('rejects ports without backends and undefined VIP ports before NAT', () => {
    const c = rs.chains.find((x) => x.name === SERVICE_REJECT_CHAIN);
    expect(c?.spec).toContain('type filter hook prerouting priority dstnat - 10');
    expect(c?.rules[0]).toContain('@no-endpoints meta l4proto tcp counter reject with tcp reset');
    expect(rs.sets.find((s) => s.name === 'no-endpoints')?.elements).toHaveLength(1);
    expect(
      buildRuleset({ ...ir, services: [] }, 'node-1').chains.some((x) => x.name === NAT_PREROUTING_CHAIN),
    ).toBe(false);
  });

  it('applies one endpoint change as a refill of that service chain only', () => {
    const next = buildRuleset(withoutBackend(ir, 'x/web:80/TCP', 'x/b1'), 'node-1');
    const plan = diffRulesets(rs, next);
    expect(plan?.changed).toEqual([`chain:${serviceChainName('x/web:80/TCP')}`]);
    const lines = plan?.script.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines?.[0]).toBe(`flush chain inet switchyard ${serviceChainName('x/web:80/TCP')}`);
    expect(lines).toHaveLength(2);
  });
});
