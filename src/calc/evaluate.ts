/**
 * The reference evaluator: (IR, packet) → verdict and the rule that decided. Every backend is
 * tested against it, so it is written for obviousness, not speed: linear scans, no caches.
 */
import type { Direction, Endpoint, IR, Protocol, Rule, RuleSet } from '../ir/types.js';
import { cidrContains, parseAddress, parseCidr, type Address, type Cidr } from '../util/ip.js';
import type { Packet } from './api.js';
import type { DecidedAt, SideReason } from './explanation.js';

export type { SideReason };

export interface SideVerdict {
  endpoint: string;
  direction: Direction;
  allowed: boolean;
  reason: SideReason;
  rule?: Rule;
  /** Log rules the packet matched on the way. */
  logged: Rule[];
  /** The Pass rule that handed the packet to the Kubernetes tier, if any. */
  passedBy?: Rule;
  ruleSet: RuleSet;
}

export interface Verdict {
  allowed: boolean;
  /** Which stage decided a denial (or 'allowed'). */
  decidedAt: DecidedAt;
  /** Name of the prefilter that dropped the packet (or its replies). */
  prefilter?: string;
  /**
   * The prefilter dropped the replies, not the request: it deny-lists sources statelessly
   * (before conntrack, as XDP and the raw table do), so replies from a listed address never
   * reach a client on another node.
   */
  prefilterReply?: boolean;
  egress?: SideVerdict;
  ingress?: SideVerdict;
  srcEndpoint?: string;
  dstEndpoint?: string;
}

const PORTLESS: ReadonlySet<Protocol> = new Set(['ICMP']);

/** Evaluator view of an IR: lookups by id and address. */
export class Oracle {
  private readonly sets = new Map<string, Cidr[]>();
  private readonly portSets = new Map<string, { address: string; port: number }[]>();
  private readonly ruleSets = new Map<string, RuleSet>();

  constructor(readonly ir: IR) {
    for (const s of ir.ipSets)
      this.sets.set(
        s.id,
        s.cidrs.map((c) => parseCidr(c) as Cidr),
      );
    for (const s of ir.ipPortSets) this.portSets.set(s.id, s.members);
    for (const rs of ir.ruleSets) this.ruleSets.set(`${rs.endpoint}|${rs.direction}`, rs);
  }

  endpointByAddress(address: string): Endpoint | undefined {
    return this.ir.endpoints.find((e) => e.addresses.includes(address));
  }

  endpointById(id: string): Endpoint | undefined {
    return this.ir.endpoints.find((e) => e.id === id);
  }

  ruleSet(endpoint: string, direction: Direction): RuleSet {
    const rs = this.ruleSets.get(`${endpoint}|${direction}`);
    if (!rs) throw new Error(`no rule set for ${endpoint} ${direction}`);
    return rs;
  }

  inSet(setId: string, address: Address): boolean {
    const cidrs = this.sets.get(setId);
    if (!cidrs) throw new Error(`IR references unknown set ${setId}`);
    return cidrs.some((c) => cidrContains(c, address));
  }

  ruleMatches(rule: Rule, remote: string, protocol: Protocol, dport: number | undefined): boolean {
    if (rule.protocol !== undefined && rule.protocol !== protocol) return false;
    if (rule.ports !== undefined) {
      if (dport === undefined || PORTLESS.has(protocol)) return false;
      if (!rule.ports.some((r) => dport >= r.first && dport <= r.last)) return false;
    }
    const addr = parseAddress(remote);
    if (!addr) throw new Error(`invalid address ${remote}`);
    if (rule.peerSet !== undefined && !this.inSet(rule.peerSet, addr)) return false;
    if (rule.peerPortSet !== undefined) {
      const members = this.portSets.get(rule.peerPortSet) ?? [];
      if (!members.some((m) => m.address === remote && m.port === dport)) return false;
    }
    return true;
  }

  /** One endpoint's verdict for one direction; `remote` is the other end of the connection. */
  evaluateSide(
    endpoint: string,
    direction: Direction,
    remote: string,
    protocol: Protocol,
    dport?: number,
  ): SideVerdict {
    const ruleSet = this.ruleSet(endpoint, direction);
    const logged: Rule[] = [];
    const base = { endpoint, direction, logged, ruleSet };
    let passedBy: Rule | undefined;
    for (const rule of ruleSet.globalRules) {
      if (!this.ruleMatches(rule, remote, protocol, dport)) continue;
      if (rule.action === 'log') logged.push(rule);
      else if (rule.action === 'pass') {
        passedBy = rule;
        break;
      } else return { ...base, allowed: rule.action === 'allow', reason: 'global-rule', rule };
    }
    const passed = passedBy ? { passedBy } : {};
    for (const rule of ruleSet.kubernetesRules) {
      if (this.ruleMatches(rule, remote, protocol, dport))
        return { ...base, ...passed, allowed: true, reason: 'kubernetes-rule', rule };
    }
    return ruleSet.kubernetesDefault === 'deny'
      ? { ...base, ...passed, allowed: false, reason: 'kubernetes-default-deny' }
      : { ...base, ...passed, allowed: true, reason: 'no-policy' };
  }

  /** Prefilter that drops `src` on its way into `node` from the fabric, if any. */
  prefilterDrop(node: string, src: string): string | undefined {
    const addr = parseAddress(src);
    if (!addr) return undefined;
    return this.ir.prefilters.find((p) => p.nodes.includes(node) && this.inSet(p.set, addr))?.name;
  }

  evaluate(packet: Packet): Verdict {
    const src = this.endpointByAddress(packet.src);
    const dst = this.endpointByAddress(packet.dst);
    const ids = { ...(src ? { srcEndpoint: src.id } : {}), ...(dst ? { dstEndpoint: dst.id } : {}) };
    // A pod talking to itself never leaves its namespace: no hook sees it.
    if (src && dst && src.id === dst.id) return { allowed: true, decidedAt: 'same-pod', ...ids };

    let egress: SideVerdict | undefined;
    if (src) {
      egress = this.evaluateSide(src.id, 'egress', packet.dst, packet.protocol, packet.dport);
      if (!egress.allowed) return { allowed: false, decidedAt: 'egress', egress, ...ids };
    }
    const sides = egress ? { egress } : {};
    if (!dst) return { ...this.replyVerdict(src, dst, packet), ...sides, ...ids };

    // The prefilter sits where the fabric enters the destination node: pods on the same node bypass it.
    if (!src || src.node !== dst.node) {
      const prefilter = this.prefilterDrop(dst.node, packet.src);
      if (prefilter) return { allowed: false, decidedAt: 'prefilter', prefilter, ...sides, ...ids };
    }
    const ingress = this.evaluateSide(dst.id, 'ingress', packet.src, packet.protocol, packet.dport);
    if (!ingress.allowed) return { allowed: false, decidedAt: 'ingress', ...sides, ingress, ...ids };
    return { ...this.replyVerdict(src, dst, packet), ...sides, ingress, ...ids };
  }

  /** Replies cross the fabric into the client's node when the server is elsewhere. */
  private replyVerdict(
    src: Endpoint | undefined,
    dst: Endpoint | undefined,
    packet: Packet,
  ): Pick<Verdict, 'allowed' | 'decidedAt' | 'prefilter' | 'prefilterReply'> {
    if (src && (!dst || dst.node !== src.node)) {
      const prefilter = this.prefilterDrop(src.node, packet.dst);
      if (prefilter) return { allowed: false, decidedAt: 'prefilter', prefilter, prefilterReply: true };
    }
    return { allowed: true, decidedAt: 'allowed' };
  }
}

export function evaluate(ir: IR, packet: Packet): Verdict {
  return new Oracle(ir).evaluate(packet);
}
