/**
 * Issue 19: the IPv6 service tables on the netfilter backends, without a kernel. ip6tables gets
 * the same nat chains as iptables over the `/IPv6` tables (/128, bracketed DNAT, an IPv6 `recent`
 * mask, icmp6 rejects, local /128 routes); nftables gets `-v6` twins of every keyed object in the
 * same base chains. Node ports stay IPv4.
 */
import { describe, expect, it } from 'vitest';
import { localRoutePrefixes, parseLocalRoutes } from '../../src/dataplane/iptables/local-routes.js';
import {
  NODEPORTS_CHAIN,
  serviceChain,
  serviceEndpointChain,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
} from '../../src/dataplane/iptables/names.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { diffRulesets } from '../../src/dataplane/nftables/diff.js';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import {
  affinitySetName,
  backendChainName,
  NAT_OUTPUT_CHAIN,
  NAT_POSTROUTING_CHAIN,
  NAT_PREROUTING_CHAIN,
  serviceChainName,
  SERVICE_REJECT_CHAIN,
} from '../../src/dataplane/nftables/services.js';
import type { IR, ServicePortTable } from '../../src/ir/types.js';
import { shownTarget } from '../../src/cli/lab-probe.js';
import { resolveTarget } from '../../src/lab/probe-service.js';
import { exposeIR } from '../support/expose.js';
import { dualStackIR, servicesIR } from './netfilter-services-fixture.js';

const ir = dualStackIR();

function table(id: string): ServicePortTable {
  const t = ir.services.find((x) => x.id === id);
  if (!t) throw new Error(`no table ${id}`);
  return t;
}

const web6 = table('x/web:80/TCP/IPv6');
const sticky6 = table('x/sticky:81/TCP/IPv6');
const empty6 = table('x/empty:80/TCP/IPv6');

describe('the fixture', () => {
  it('has IPv6 tables over IPv6 backends, and none for the SingleStack IPv4 service', () => {
    expect(web6.address).toMatch(/^fd00:5957:/);
    expect(web6.backends.map((b) => b.address)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^fd00:5957::/)]),
    );
    expect(web6.backends).toHaveLength(3);
    expect(ir.services.some((t) => t.service === 'x/v4only' && t.family === 6)).toBe(false);
  });
});

describe('iptables: IPv6 services in ip6tables', () => {
  const plan = planForNode(ir, 'node-1');

  function chains(p: NodePlan, family: 4 | 6, name: 'nat' | 'filter'): Map<string, readonly string[]> {
    const t = p.tables.find((x) => x.family === family && x.table === name);
    if (!t) throw new Error(`no IPv${family} ${name} table`);
    return new Map(t.chains.map((c) => [c.name, c.rules]));
  }

  it('dispatches each family to its own tables: /128 cluster IPs in ip6tables, /32 in iptables', () => {
    const nat6 = chains(plan, 6, 'nat');
    const nat4 = chains(plan, 4, 'nat');
    const dispatch6 = nat6.get(SERVICES_CHAIN) ?? [];
    expect(dispatch6).toContain(
      `-d ${web6.address}/128 -p tcp -m tcp --dport 80 -m comment --comment "${web6.id}" -j ${serviceChain(web6.id)}`,
    );
    // web 80 + 53, sticky; nothing for the empty service nor the IPv4-only one.
    expect(dispatch6).toHaveLength(3);
    expect(dispatch6.every((r) => r.includes('/IPv6'))).toBe(true);
    expect((nat4.get(SERVICES_CHAIN) ?? []).some((r) => r.includes('fd00'))).toBe(false);
    expect(nat4.get(SERVICES_CHAIN)).toHaveLength(4);
    const nat6Table = plan.tables.find((t) => t.family === 6 && t.table === 'nat');
    expect(nat6Table?.jumps.map((j) => j.builtin)).toEqual(['PREROUTING', 'OUTPUT', 'POSTROUTING']);
  });

  it('spreads with the statistic module and DNATs to [address]:port, masquerading hairpin', () => {
    const nat6 = chains(plan, 6, 'nat');
    const [fromNode, ...picks] = nat6.get(serviceChain(web6.id)) ?? [];
    expect(fromNode).toMatch(/^-m addrtype --src-type LOCAL .* -j MARK --or-mark 0x4000$/);
    expect(picks.map((r) => /--probability (\S+)/.exec(r)?.[1])).toEqual([
      '0.3333333333',
      '0.5000000000',
      undefined,
    ]);
    const b3 = web6.backends.find((b) => b.endpoint === 'x/b3');
    if (!b3) throw new Error('no x/b3');
    const sep = nat6.get(serviceEndpointChain(web6.id, b3.endpoint, b3.address, b3.port)) ?? [];
    expect(sep[0]).toMatch(new RegExp(`^-s ${b3.address}/128 .* -j MARK --or-mark 0x4000$`));
    expect(sep[1]).toMatch(new RegExp(`-p tcp -j DNAT --to-destination \\[${b3.address}\\]:8081$`));
  });

  it('keeps ClientIP affinity with recent over the whole IPv6 client address', () => {
    const nat6 = chains(plan, 6, 'nat');
    const svc = nat6.get(serviceChain(sticky6.id)) ?? [];
    const checks = svc.filter((r) => r.includes('--rcheck'));
    expect(checks).toHaveLength(3);
    for (const r of checks)
      expect(r).toContain(
        '--rcheck --seconds 600 --reap --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource',
      );
    const b = sticky6.backends[0];
    if (!b) throw new Error('no backend');
    const [, dnat] = nat6.get(serviceEndpointChain(sticky6.id, b.endpoint, b.address, b.port)) ?? [];
    expect(dnat).toContain('--set --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -j DNAT');
    // The IPv4 side keeps its IPv4 mask.
    const svc4 = chains(plan, 4, 'nat').get(serviceChain('x/sticky:81/TCP')) ?? [];
    expect(svc4.find((r) => r.includes('--rcheck'))).toContain('--mask 255.255.255.255');
  });

  it('rejects a service without endpoints and undefined ports of an IPv6 cluster IP with icmp6 or a reset', () => {
    const reject = chains(plan, 6, 'filter').get(SERVICES_REJECT_CHAIN) ?? [];
    expect(reject).toContain(
      `-d ${empty6.address}/128 -p tcp -m tcp --dport 80 -m comment --comment "${empty6.id} has no endpoints" -j REJECT --reject-with tcp-reset`,
    );
    expect(reject).toContain(
      `-d ${web6.address}/128 -m comment --comment "port not defined by the service" -j REJECT --reject-with icmp6-port-unreachable`,
    );
    expect(reject.some((r) => /icmp-port-unreachable|\/32 /.test(r))).toBe(false);
  });

  it('routes IPv6 cluster IPs locally (/128) beside the IPv4 ones, and reads them back', () => {
    const prefixes = localRoutePrefixes(ir);
    // Consecutive cluster IPs are one prefix, as for IPv4: ::2 and ::3 are ::2/127.
    expect(prefixes.filter((p) => p.includes(':'))).toEqual([`${empty6.address}/127`, `${web6.address}/128`]);
    expect([empty6.address, sticky6.address, web6.address]).toEqual([
      'fd00:5957:0:1::2',
      'fd00:5957:0:1::3',
      'fd00:5957:0:1::4',
    ]);
    expect(prefixes.slice(0, -2).every((p) => !p.includes(':'))).toBe(true);
    // Read back as written (a host route is printed without its length), IPv4 first, numerically.
    const read = parseLocalRoutes(
      `local ${web6.address} dev lo proto 83 metric 1024 pref medium\n` +
        `local fd00:5957:0:1::10/124 dev lo proto 83 metric 1024 pref medium\n` +
        `local 198.19.0.2/31 dev lo scope host \n`,
    );
    expect(read).toEqual(['198.19.0.2/31', `${web6.address}/128`, 'fd00:5957:0:1::10/124']);
  });

  it('serves node ports in the IPv4 table only, and IPv6 load-balancer addresses in the IPv6 one', () => {
    const exposed = exposeIR(
      ir,
      { 'node-1': '198.19.128.1' },
      {
        'x/web:80/TCP': { nodePort: 30080 },
        'x/web:80/TCP/IPv6': { nodePort: 30080, loadBalancerIPs: ['fd00:5957:0:c0::1'] },
      },
    );
    const p = planForNode(exposed, 'node-1');
    expect(chains(p, 4, 'nat').get(NODEPORTS_CHAIN)).toHaveLength(1);
    const nat6 = chains(p, 6, 'nat');
    expect(nat6.has(NODEPORTS_CHAIN)).toBe(false);
    expect(
      nat6
        .get(SERVICES_CHAIN)
        ?.some((r) => r.startsWith('-d fd00:5957:0:c0::1/128 -p tcp -m tcp --dport 80')),
    ).toBe(true);
    expect([...nat6.values()].flat().some((r) => r.includes('198.19.128.1'))).toBe(false);
    expect(localRoutePrefixes(exposed)).toContain('fd00:5957:0:c0::1/128');
  });
});

describe('nftables: IPv6 twins in table inet switchyard', () => {
  const rs = buildRuleset(ir, 'node-1');

  function rules(name: string): string[] {
    const c = rs.chains.find((x) => x.name === name);
    if (!c) throw new Error(`no chain ${name}`);
    return c.rules;
  }

  function elements(name: string): string[] {
    const s = [...rs.sets, ...rs.maps].find((x) => x.name === name);
    if (!s) throw new Error(`no set or map ${name}`);
    return s.elements;
  }

  it('looks IPv6 service ports up in services-v6 (ip6 daddr . proto . port), beside the IPv4 map', () => {
    expect(rules(NAT_PREROUTING_CHAIN)).toEqual([
      'ip daddr . meta l4proto . th dport vmap @services',
      'ip daddr . meta l4proto . th dport vmap @nodeports',
      'ip6 daddr . meta l4proto . th dport vmap @services-v6',
    ]);
    expect(rules(NAT_OUTPUT_CHAIN)).toContain(
      'ip6 daddr . meta l4proto . th dport @service-ports-v6 meta mark set meta mark or 0x00004000',
    );
    expect(rs.maps.find((m) => m.name === 'services-v6')?.spec).toBe(
      '{ type ipv6_addr . inet_proto . inet_service : verdict; }',
    );
    expect(elements('services-v6')).toContain(
      `${web6.address} . tcp . 80 : goto ${serviceChainName(web6.id)}`,
    );
    expect(elements('services-v6')).toHaveLength(3);
    expect(elements('services').some((e) => e.includes('fd00'))).toBe(false);
    expect(rs.maps.some((m) => m.name === 'nodeports-v6')).toBe(false);
  });

  it('DNATs with numgen over IPv6 address . port', () => {
    const addr = (id: string) => web6.backends.find((b) => b.endpoint === id)?.address;
    expect(rules(serviceChainName(web6.id))).toEqual([
      `meta l4proto tcp counter dnat ip6 addr . port to numgen random mod 3 map { 0 : ${addr('x/b1')} . 8080, ` +
        `1 : ${addr('x/b2')} . 8080, 2 : ${addr('x/b3')} . 8081 } comment "${web6.id}"`,
    ]);
  });

  it('keeps ClientIP affinity in ipv6_addr timeout sets, DNATing to [address]:port', () => {
    const b = sticky6.backends[0];
    if (!b) throw new Error('no backend');
    const aff = affinitySetName(sticky6.id, b);
    expect(rs.sets.find((s) => s.name === aff)?.spec).toBe(
      '{ type ipv6_addr; flags dynamic,timeout; timeout 600s; }',
    );
    expect(rules(serviceChainName(sticky6.id))[0]).toBe(
      `ip6 saddr @${aff} goto ${backendChainName(sticky6.id, b)}`,
    );
    expect(rules(backendChainName(sticky6.id, b))).toEqual([
      `update @${aff} { ip6 saddr } meta l4proto tcp counter dnat ip6 to [${b.address}]:${b.port} comment "${sticky6.id} -> ${b.endpoint}"`,
    ]);
  });

  it('rejects IPv6 ports without endpoints and undefined ports of an IPv6 cluster IP, masquerades IPv6 hairpin', () => {
    const reject = rules(SERVICE_REJECT_CHAIN);
    expect(reject).toContain(
      'ip6 daddr . meta l4proto . th dport @no-endpoints-v6 meta l4proto tcp counter reject with tcp reset comment "service has no endpoints"',
    );
    expect(reject).toContain('ip6 daddr . meta l4proto . th dport @service-ports-v6 return');
    expect(reject).toContain(
      'ip6 daddr @service-ips-v6 counter reject comment "port not defined by the service"',
    );
    expect(elements('no-endpoints-v6')).toEqual([`${empty6.address} . tcp . 80`]);
    expect(elements('service-ips-v6')).toEqual([empty6.address, sticky6.address, web6.address].sort());
    expect(elements('hairpin-v6')).toHaveLength(3);
    expect(rules(NAT_POSTROUTING_CHAIN)).toContain(
      'ct status dnat ip6 saddr . ip6 daddr @hairpin-v6 counter masquerade fully-random comment "hairpin"',
    );
  });

  it('renders IPv4-only services exactly as before: no -v6 objects', () => {
    const v4 = buildRuleset(servicesIR(), 'node-1');
    expect([...v4.sets, ...v4.maps].some((s) => s.name.endsWith('-v6'))).toBe(false);
    const serviceRules = v4.chains
      .filter((c) =>
        [SERVICE_REJECT_CHAIN, NAT_PREROUTING_CHAIN, NAT_OUTPUT_CHAIN, NAT_POSTROUTING_CHAIN].includes(
          c.name,
        ),
      )
      .flatMap((c) => c.rules);
    expect(serviceRules).toHaveLength(6 + 2 + 3 + 3);
    expect(serviceRules.some((r) => r.includes('ip6'))).toBe(false);
  });

  it('adds the IPv6 side of a service incrementally', () => {
    const v4only: IR = { ...ir, services: ir.services.filter((t) => t.family !== 6) };
    const plan = diffRulesets(buildRuleset(v4only, 'node-1'), rs);
    expect(plan).toBeDefined();
    expect(plan?.changed).toEqual(
      expect.arrayContaining(['map:services-v6', `chain:${NAT_PREROUTING_CHAIN}`]),
    );
  });
});

describe('lab probe targets', () => {
  it('takes [IPv6]:PORT literally and shows resolved IPv6 targets bracketed', () => {
    expect(resolveTarget(ir, '[fd00:5957:0:1::4]:80', 'TCP', 6)).toEqual({
      address: 'fd00:5957:0:1::4',
      port: 80,
    });
    expect(resolveTarget(ir, 'lb/[fd00:5957:0:c0::1]:443', 'TCP', 6)).toEqual({
      address: 'fd00:5957:0:c0::1',
      port: 443,
    });
    expect(() => resolveTarget(ir, '[fd00::1::2]:80', 'TCP', 6)).toThrow(/not an IP address/);
    expect(shownTarget({ to: 'svc/x/web:80', address: web6.address, port: 80 })).toBe(
      ` ([${web6.address}]:80)`,
    );
    expect(shownTarget({ to: `[${web6.address}]:80`, address: web6.address, port: 80 })).toBe('');
    expect(shownTarget({ to: 'svc/x/web:80', address: '198.19.0.5', port: 80 })).toBe(' (198.19.0.5:80)');
  });
});
