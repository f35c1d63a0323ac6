/**
 * IPv6 twins of the arbitraries' IPv4 models, for the eBPF differential test: every address
 * 198.18.c.d has the twin fd00:5957::c612:cd (prefix lengths + 96), so a model keeps its shape
 * and meaning on the other family. Additive: the arbitraries stay IPv4.
 */
import type { Model, Peer } from '../../src/model/types.js';

/** '198.18.0.5' → 'fd00:5957::c612:5'. */
export function v6Twin(address: string): string {
  const [a = 0, b = 0, c = 0, d = 0] = address.split('.').map(Number);
  return `fd00:5957::${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

/** '198.18.0.0/24' → 'fd00:5957::c612:0/120'. */
export function v6TwinCidr(cidr: string): string {
  const [address = '', len] = cidr.split('/');
  return `${v6Twin(address)}/${len === undefined ? 128 : Number(len) + 96}`;
}

function twinPeers(peers: Peer[] | undefined): Peer[] | undefined {
  if (!peers) return peers;
  return peers.flatMap((p) => {
    const out: Peer = { ...p };
    if (p.nets) out.nets = [...p.nets, ...p.nets.map(v6TwinCidr)];
    if (p.notNets) out.notNets = [...p.notNets, ...p.notNets.map(v6TwinCidr)];
    if (!p.ipBlock) return [out];
    return [
      out,
      { ...out, ipBlock: { cidr: v6TwinCidr(p.ipBlock.cidr), except: p.ipBlock.except.map(v6TwinCidr) } },
    ];
  });
}

/**
 * The model with explicit pod addresses (the order the lab allocates them in, from 198.18.0.2):
 * IPv6 twins for all pods but every fourth, which keeps IPv4; every ipBlock and GlobalPolicy net
 * gets its twin beside it, so an IPv6 packet meets the same policy its IPv4 twin would.
 */
export function mostlyIpv6Model(m: Model): Model {
  return {
    ...m,
    pods: m.pods.map((p, i) => {
      const v4 = `198.18.0.${i + 2}`;
      return { ...p, ips: [i % 4 === 3 ? v4 : v6Twin(v4)] };
    }),
    networkPolicies: m.networkPolicies.map((np) => ({
      ...np,
      ingress: np.ingress.map((r) => ({ ...r, peers: twinPeers(r.peers) })),
      egress: np.egress.map((r) => ({ ...r, peers: twinPeers(r.peers) })),
    })),
    globalPolicies: m.globalPolicies.map((gp) => ({
      ...gp,
      ingress: gp.ingress.map((r) => ({ ...r, peers: twinPeers(r.peers) })),
      egress: gp.egress.map((r) => ({ ...r, peers: twinPeers(r.peers) })),
    })),
  };
}
