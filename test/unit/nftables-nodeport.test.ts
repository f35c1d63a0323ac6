/**
 * The nftables backend's traffic from outside, without a kernel: the nodeports map keyed on this
 * node's external address, ext/svl chains per traffic policy, load-balancer addresses in the
 * services map, hairpin and masquerade in nat-postrouting, Local drops and refusals before NAT,
 * and the incremental diff of a backend moving between nodes.
 */
import { describe, expect, it } from 'vitest';
import { diffRulesets } from '../../src/dataplane/nftables/diff.js';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import {
  externalChainName,
  HAIRPIN_SET,
  localServiceChainName,
  NAT_OUTPUT_CHAIN,
  NAT_POSTROUTING_CHAIN,
  NO_ENDPOINTS_SET,
  NO_LOCAL_ENDPOINTS_SET,
  NODEPORTS_MAP,
  SERVICE_IPS_SET,
  SERVICE_PORTS_SET,
  serviceChainName,
  SERVICES_MAP,
} from '../../src/dataplane/nftables/services.js';
import type { NftRuleset } from '../../src/dataplane/nftables/objects.js';
import type { IR } from '../../src/ir/types.js';
import { EXTERNAL, exposedIR, LB_IP } from './netfilter-services-fixture.js';

const ir = exposedIR();
const node1 = buildRuleset(ir, 'node-1');
const node2 = buildRuleset(ir, 'node-2');

function elements(rs: NftRuleset, name: string): string[] {
  const s = [...rs.sets, ...rs.maps].find((x) => x.name === name);
  if (!s) throw new Error(`no set or map ${name}`);
  return s.elements;
}

function rules(rs: NftRuleset, name: string): string[] | undefined {
  return rs.chains.find((c) => c.name === name)?.rules;
}

function address(id: string): string {
  return ir.endpoints.find((e) => e.id === id)?.addresses[0] as string;
}

function onlyOn(node: string, id: string): IR {
  return {
    ...ir,
    services: ir.services.map((t) =>
      t.id === id ? { ...t, backends: t.backends.filter((b) => b.node === node) } : t,
    ),
  };
}

describe('nftables NodePort and LoadBalancer', () => {
  it("keys the nodeports map on this node's external address only", () => {
    expect(elements(node1, NODEPORTS_MAP)).toEqual([
      `${EXTERNAL['node-1']} . tcp . 30081 : goto ${externalChainName('x/sticky:81/TCP')}`,
      `${EXTERNAL['node-1']} . tcp . 30080 : goto ${externalChainName('x/web:80/TCP')}`,
    ]);
    expect(elements(node2, NODEPORTS_MAP).every((e) => e.startsWith(`${EXTERNAL['node-2']} . `))).toBe(true);
    const bare = { ...ir, nodes: ir.nodes.map(({ externalAddress: _x, ...n }) => n) };
    expect(elements(buildRuleset(bare, 'node-1'), NODEPORTS_MAP)).toEqual([]);
  });

  it('sends load-balancer addresses to the external chain through the services map', () => {
    expect(elements(node1, SERVICES_MAP)).toContain(
      `${LB_IP} . tcp . 81 : goto ${externalChainName('x/sticky:81/TCP')}`,
    );
    expect(elements(node1, SERVICE_IPS_SET)).toContain(LB_IP);
  });

  it('masquerades Cluster traffic from outside; Local keeps the client and picks local backends', () => {
    expect(rules(node1, externalChainName('x/web:80/TCP'))).toEqual([
      `meta mark set meta mark or 0x00004000 goto ${serviceChainName('x/web:80/TCP')}`,
    ]);
    const id = 'x/sticky:81/TCP';
    expect(rules(node1, externalChainName(id))).toEqual([
      `fib saddr type local meta mark set meta mark or 0x00004000 goto ${serviceChainName(id)}`,
      `goto ${localServiceChainName(id)}`,
    ]);
    const svl = rules(node1, localServiceChainName(id))?.join('\n') ?? '';
    expect(svl).toMatch(/numgen random mod 2 vmap/);
    // node-2 holds only b3: its pick has one backend.
    expect(rules(node2, localServiceChainName(id))?.join('\n')).toMatch(/numgen random mod 1 vmap/);
  });

  it('drops Local traffic before NAT where this node has no backend', () => {
    const id = 'x/sticky:81/TCP';
    const rs = buildRuleset(onlyOn('node-2', id), 'node-1');
    expect(elements(rs, NO_LOCAL_ENDPOINTS_SET)).toEqual([
      `${LB_IP} . tcp . 81`,
      `${EXTERNAL['node-1']} . tcp . 30081`,
    ]);
    expect(elements(rs, SERVICE_PORTS_SET)).not.toContain(`${LB_IP} . tcp . 81`);
    expect(rules(rs, externalChainName(id))).toHaveLength(1);
    expect(rules(rs, localServiceChainName(id))).toBeUndefined();
    expect(rules(rs, 'svc-reject')).toContain(
      `ip daddr . meta l4proto . th dport @${NO_LOCAL_ENDPOINTS_SET} counter drop comment "service has no local endpoints"`,
    );
  });

  it('uses only local backends for internalTrafficPolicy Local, and drops where there is none', () => {
    const id = 'x/web:53/UDP';
    const vip = ir.services.find((t) => t.id === id)?.address;
    expect(elements(node1, SERVICES_MAP)).toContain(`${vip} . udp . 53 : goto ${localServiceChainName(id)}`);
    const rs = buildRuleset(onlyOn('node-2', id), 'node-1');
    expect(elements(rs, SERVICES_MAP).some((e) => e.startsWith(`${vip} . udp . 53 `))).toBe(false);
    expect(elements(rs, NO_LOCAL_ENDPOINTS_SET)).toEqual([`${vip} . udp . 53`]);
  });

  it('refuses a service without endpoints at its VIP and its node port', () => {
    const vip = ir.services.find((t) => t.id === 'x/empty:80/TCP')?.address;
    expect(elements(node1, NO_ENDPOINTS_SET)).toEqual([
      `${vip} . tcp . 80`,
      `${EXTERNAL['node-1']} . tcp . 30082`,
    ]);
  });

  it('masquerades hairpin traffic and what carries the mark, in nat-postrouting', () => {
    expect(elements(node1, HAIRPIN_SET)).toEqual(
      ['x/b1', 'x/b2', 'x/b3'].map((id) => `${address(id)} . ${address(id)}`).sort(),
    );
    const post = node1.chains.find((c) => c.name === NAT_POSTROUTING_CHAIN);
    expect(post?.spec).toBe('{ type nat hook postrouting priority 100; policy accept; }');
    expect(post?.rules).toEqual([
      `ct status dnat ip saddr . ip daddr @${HAIRPIN_SET} counter masquerade fully-random comment "hairpin"`,
      'meta mark & 0x00004000 == 0 return',
      'meta mark set meta mark xor 0x00004000 counter masquerade fully-random',
    ]);
    expect(rules(node1, NAT_OUTPUT_CHAIN)?.[0]).toBe(
      `ip daddr . meta l4proto . th dport @${SERVICE_PORTS_SET} meta mark set meta mark or 0x00004000`,
    );
  });

  it('updates a Local service losing its last local backend in one incremental transaction', () => {
    const id = 'x/sticky:81/TCP';
    const next = buildRuleset(onlyOn('node-2', id), 'node-1');
    const plan = diffRulesets(node1, next);
    expect(plan).toBeDefined();
    expect(plan?.changed).toEqual(
      expect.arrayContaining([
        `set:${SERVICE_PORTS_SET}`,
        `set:${NO_LOCAL_ENDPOINTS_SET}`,
        `chain:${externalChainName(id)}`,
        `chain:${localServiceChainName(id)}`,
      ]),
    );
    expect(plan?.changed.some((c) => c.includes(NODEPORTS_MAP) || c.includes(`map:${SERVICES_MAP}`))).toBe(
      false,
    );
  });
});
