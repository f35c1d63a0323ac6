/**
 * The iptables backend's traffic from outside, without a kernel: kube-proxy's KUBE-NODEPORTS /
 * KUBE-EXT / KUBE-SVL layout under SY- names, masquerade marks, hairpin, Local drops, refusals,
 * the local routes of service addresses, and the entry jumps the fingerprint checks.
 */
import { describe, expect, it } from 'vitest';
import { missingEntryJumps } from '../../src/dataplane/iptables/fingerprint.js';
import { parseSave } from '../../src/dataplane/iptables/kernel.js';
import {
  localRoutePrefixes,
  localRouteScript,
  parseLocalRoutes,
} from '../../src/dataplane/iptables/local-routes.js';
import {
  MASQ_MARK,
  NODEPORTS_CHAIN,
  POSTROUTING_CHAIN,
  serviceChain,
  serviceExternalChain,
  serviceLocalChain,
  SERVICES_CHAIN,
  SERVICES_REJECT_CHAIN,
} from '../../src/dataplane/iptables/names.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import type { IR } from '../../src/ir/types.js';
import { EXTERNAL, exposedIR, LB_IP } from './netfilter-services-fixture.js';

const ir = exposedIR();
const node1 = planForNode(ir, 'node-1');
const node2 = planForNode(ir, 'node-2');
const MARK = `-j MARK --or-mark ${MASQ_MARK}`;

function chain(p: NodePlan, table: 'nat' | 'filter', name: string): readonly string[] | undefined {
  return p.tables.find((t) => t.family === 4 && t.table === table)?.chains.find((c) => c.name === name)
    ?.rules;
}

function rules(p: NodePlan, table: 'nat' | 'filter', name: string): readonly string[] {
  const r = chain(p, table, name);
  if (!r) throw new Error(`no chain ${name} in ${table}`);
  return r;
}

function address(id: string): string {
  return ir.endpoints.find((e) => e.id === id)?.addresses[0] as string;
}

describe('iptables NodePort and LoadBalancer', () => {
  it("enters SY-NODEPORTS from SY-SERVICES for this node's external address only, last", () => {
    for (const [p, node] of [
      [node1, 'node-1'],
      [node2, 'node-2'],
    ] as const) {
      const dispatch = rules(p, 'nat', SERVICES_CHAIN);
      const last = dispatch[dispatch.length - 1] as string;
      expect(last).toMatch(new RegExp(`^-d ${EXTERNAL[node]}/32 .* -j ${NODEPORTS_CHAIN}$`));
      expect(dispatch.filter((r) => r.includes(NODEPORTS_CHAIN))).toHaveLength(1);
      expect(dispatch.join('\n')).not.toContain(EXTERNAL[node === 'node-1' ? 'node-2' : 'node-1']);
    }
    const nodePorts = rules(node1, 'nat', NODEPORTS_CHAIN);
    expect(nodePorts).toEqual([
      expect.stringMatching(
        new RegExp(`^-p tcp -m tcp --dport 30081 .* -j ${serviceExternalChain('x/sticky:81/TCP')}$`),
      ),
      expect.stringMatching(
        new RegExp(`^-p tcp -m tcp --dport 30080 .* -j ${serviceExternalChain('x/web:80/TCP')}$`),
      ),
    ]);
  });

  it('serves no node port on a node without an external address', () => {
    const bare = { ...ir, nodes: ir.nodes.map(({ externalAddress: _x, ...n }) => n) };
    const p = planForNode(bare, 'node-1');
    expect(chain(p, 'nat', NODEPORTS_CHAIN)).toBeUndefined();
    expect(rules(p, 'nat', SERVICES_CHAIN).join('\n')).not.toContain('198.19.128.');
    // The load-balancer address still reaches the service.
    expect(rules(p, 'nat', SERVICES_CHAIN).some((r) => r.startsWith(`-d ${LB_IP}/32`))).toBe(true);
  });

  it('masquerades traffic from outside under Cluster and sends it to every backend', () => {
    expect(rules(node1, 'nat', serviceExternalChain('x/web:80/TCP'))).toEqual([
      expect.stringMatching(new RegExp(`externalTrafficPolicy Cluster.*${MARK}$`)),
      `-j ${serviceChain('x/web:80/TCP')}`,
    ]);
  });

  it("keeps the client address under Local and uses only this node's backends", () => {
    const id = 'x/sticky:81/TCP';
    const ext = rules(node1, 'nat', serviceExternalChain(id));
    expect(ext).toHaveLength(2);
    expect(ext[0]).toMatch(new RegExp(`^-m addrtype --src-type LOCAL .* -j ${serviceChain(id)}$`));
    expect(ext[1]).toMatch(new RegExp(`-j ${serviceLocalChain(id)}$`));
    expect(ext.join('\n')).not.toContain('MARK');
    const svl = rules(node1, 'nat', serviceLocalChain(id)).join('\n');
    // node-1 holds b1 and b2; b3 is on node-2.
    expect(svl).toContain('-> x/b1');
    expect(svl).toContain('-> x/b2');
    expect(svl).not.toContain('-> x/b3');
    // Affinity over the local backends, with the service's timeout.
    expect(svl).toMatch(/--rcheck --seconds 30 --reap/);
    // On node-2 only b3 is local: one backend, picked unconditionally.
    const svl2 = rules(node2, 'nat', serviceLocalChain(id)).filter((r) => r.includes('-> x/'));
    expect(svl2.filter((r) => !r.includes('recent'))).toEqual([expect.not.stringContaining('statistic')]);
  });

  it('sends load-balancer addresses to the external chain', () => {
    expect(rules(node1, 'nat', SERVICES_CHAIN)).toContain(
      `-d ${LB_IP}/32 -p tcp -m tcp --dport 81 -m comment --comment "x/sticky:81/TCP load balancer ${LB_IP}" -j ${serviceExternalChain('x/sticky:81/TCP')}`,
    );
  });

  it('drops Local traffic on a node without a local backend, as kube-proxy does', () => {
    const id = 'x/sticky:81/TCP';
    const lonely = {
      ...ir,
      services: ir.services.map((t) =>
        t.id === id ? { ...t, backends: t.backends.filter((b) => b.node === 'node-2') } : t,
      ),
    };
    const p = planForNode(lonely, 'node-1');
    expect(rules(p, 'nat', serviceExternalChain(id))).toHaveLength(1);
    expect(chain(p, 'nat', serviceLocalChain(id))).toBeUndefined();
    const drops = rules(p, 'filter', SERVICES_REJECT_CHAIN).filter((r) =>
      r.includes('has no local endpoints'),
    );
    expect(drops).toEqual([
      `-d ${LB_IP}/32 -p tcp -m tcp --dport 81 -m comment --comment "${id} has no local endpoints" -j DROP`,
      `-d ${EXTERNAL['node-1']}/32 -p tcp -m tcp --dport 30081 -m comment --comment "${id} has no local endpoints" -j DROP`,
    ]);
  });

  it('uses only local backends for internalTrafficPolicy Local, and drops where there is none', () => {
    const id = 'x/web:53/UDP';
    const web = ir.services.find((t) => t.id === id);
    expect(rules(node1, 'nat', SERVICES_CHAIN)).toContain(
      `-d ${web?.address}/32 -p udp -m udp --dport 53 -m comment --comment "${id}" -j ${serviceLocalChain(id)}`,
    );
    const only2 = {
      ...ir,
      services: ir.services.map((t) =>
        t.id === id ? { ...t, backends: t.backends.filter((b) => b.node === 'node-2') } : t,
      ),
    };
    const p = planForNode(only2, 'node-1');
    expect(rules(p, 'nat', SERVICES_CHAIN).some((r) => r.includes(`"${id}"`))).toBe(false);
    expect(rules(p, 'filter', SERVICES_REJECT_CHAIN)).toContain(
      `-d ${web?.address}/32 -p udp -m udp --dport 53 -m comment --comment "${id} has no local endpoints" -j DROP`,
    );
  });

  it('refuses a service without endpoints at its VIP and at its node port', () => {
    const empty = ir.services.find((t) => t.id === 'x/empty:80/TCP');
    const refused = rules(node1, 'filter', SERVICES_REJECT_CHAIN).filter((r) =>
      r.includes('has no endpoints'),
    );
    expect(refused).toEqual([
      `-d ${empty?.address}/32 -p tcp -m tcp --dport 80 -m comment --comment "x/empty:80/TCP has no endpoints" -j REJECT --reject-with tcp-reset`,
      `-d ${EXTERNAL['node-1']}/32 -p tcp -m tcp --dport 30082 -m comment --comment "x/empty:80/TCP has no endpoints" -j REJECT --reject-with tcp-reset`,
    ]);
    // Undefined ports of a load-balancer address are refused like a VIP's.
    expect(
      rules(node1, 'filter', SERVICES_REJECT_CHAIN).filter(
        (r) => r.startsWith(`-d ${LB_IP}/32`) && r.includes('port not defined'),
      ),
    ).toHaveLength(2);
  });

  it('marks a backend reaching itself through its service (hairpin) and masquerades marked packets', () => {
    const svc = rules(node1, 'nat', serviceChain('x/web:80/TCP'));
    const sep = / -j (SY-SEP-\S+)$/.exec(svc.find((r) => r.includes('-> x/b1')) as string)?.[1] as string;
    expect(rules(node1, 'nat', sep)).toEqual([
      expect.stringMatching(new RegExp(`^-s ${address('x/b1')}/32 .*hairpin.* ${MARK}$`)),
      expect.stringMatching(new RegExp(`-j DNAT --to-destination ${address('x/b1')}:8080$`)),
    ]);
    expect(rules(node1, 'nat', POSTROUTING_CHAIN)).toEqual([
      `-m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`,
      `-j MARK --xor-mark ${MASQ_MARK}`,
      expect.stringMatching(/-j MASQUERADE --random-fully$/),
    ]);
    const nat = node1.tables.find((t) => t.table === 'nat');
    expect(nat?.jumps).toContainEqual({
      builtin: 'POSTROUTING',
      rule: `-m comment --comment "switchyard" -j ${POSTROUTING_CHAIN}`,
    });
  });

  it('reads POSTROUTING jumps back and reports a missing one', () => {
    const saved = [
      '*nat',
      `:${POSTROUTING_CHAIN} - [0:0]`,
      `:${SERVICES_CHAIN} - [0:0]`,
      `-A PREROUTING -m comment --comment "switchyard" -j ${SERVICES_CHAIN}`,
      `-A OUTPUT -m comment --comment "switchyard" -j ${SERVICES_CHAIN}`,
      `-A POSTROUTING -m comment --comment "switchyard" -j ${POSTROUTING_CHAIN}`,
      'COMMIT',
    ].join('\n');
    expect(parseSave(saved, 4)[0]?.jumps.map((j) => j.builtin)).toEqual([
      'PREROUTING',
      'OUTPUT',
      'POSTROUTING',
    ]);
    expect(missingEntryJumps(saved)).toEqual([]);
    const without = saved.replace(/^-A POSTROUTING.*\n/m, '');
    expect(missingEntryJumps(without)).toEqual([`nat/POSTROUTING->${POSTROUTING_CHAIN}`]);
  });

  it('routes service and load-balancer addresses locally, as few exact prefixes, by difference', () => {
    const want = localRoutePrefixes(ir);
    // VIPs 198.19.0.2-4 (one /31 and one /32) and the load-balancer address.
    expect(want).toEqual(['198.19.0.2/31', '198.19.0.4/32', `${LB_IP}/32`]);
    const many = localRoutePrefixes({
      ...ir,
      services: Array.from({ length: 1024 }, (_, i) => ({
        ...(ir.services[0] as IR['services'][number]),
        address: `198.19.${i >> 8}.${i & 255}`,
      })),
    });
    expect(many).toEqual(['198.19.0.0/22']);
    expect(localRouteScript(want, want)).toEqual([]);
    const stale = '198.19.0.99/32';
    expect(localRouteScript(want, [...want.slice(1), stale])).toEqual([
      'route replace local 198.19.0.2/31 dev lo table local proto 83',
      `route del local ${stale} dev lo table local proto 83`,
    ]);
    expect(
      parseLocalRoutes('local 198.19.0.2/31 dev lo scope host \nlocal 198.19.192.1 dev lo scope host \n'),
    ).toEqual(['198.19.0.2/31', '198.19.192.1/32']);
  });
});
