/**
 * The text of single policy rules, shared by the rule walk (render-rules.ts) and the decision
 * table (render-table.ts): both must count, aggregate and decide a packet with exactly the same
 * rules, so counters and flows read the same whichever rendered it.
 *
 * Flows are aggregated in ipsets (`hash:ip,port,ip` with counters and a timeout, one per deciding
 * rule and family; see names.ts and flow-counters.ts). A set element's counters are the running
 * totals of one (source, protocol and destination port, destination): the packets that rule
 * decided. Two kernel facts shape the rules:
 *
 * - the SET target's add sets a new element's counters to this packet (1 packet, its length), and
 *   with `--exist` it resets an existing element's counters the same way, so adding is only done
 *   when the element is missing, and without `--exist` (which also means a timeout is never
 *   refreshed: a busy element is re-created when it times out);
 * - a set match adds the packet to the element's counters unless told `! --update-counters`.
 *
 * So a decision is a counting match (the common case), else an add (that counts), else — the set
 * is full — the same verdict through a SY-FLOWFULL chain that counts what was not aggregated. The
 * verdict never depends on the set.
 */
import type { Protocol } from '../../ir/types.js';
import { flowRuleTag } from '../netfilter/aggregates.js';
import {
  ACCEPT_MARK,
  ALLOW_CHAIN,
  commentText,
  FLOW_FULL_ALLOW_CHAIN,
  FLOW_FULL_DROP_CHAIN,
  FLOW_FULL_LOG_CHAIN,
  FLOW_FULL_TRAFFIC_CHAIN,
  flowSetName,
  quote,
  trafficSetName,
  type Family,
} from './names.js';

export const GOTO_ALLOW = `-g ${ALLOW_CHAIN}`;

export function comment(text: string): string {
  return `-m comment --comment ${quote(commentText(text))}`;
}

export function line(...parts: string[]): string {
  return parts.filter(Boolean).join(' ');
}

export function protocolMatch(protocol: Protocol, family: Family): string {
  if (protocol === 'ICMP') return family === 4 ? '-p icmp' : '-p ipv6-icmp';
  return `-p ${protocol.toLowerCase()}`;
}

/** Where flows are aggregated in one family; absent when flows are off. */
export interface FlowSets {
  family: Family;
}

/** The key of every flow set: source address, protocol and destination port, destination address. */
const KEY = 'src,dst,dst';

function counting(set: string): string {
  return `-m set --match-set ${set} ${KEY}`;
}

function present(set: string): string {
  return `-m set --match-set ${set} ${KEY} ! --update-counters`;
}

function absent(set: string): string {
  return `-m set ! --match-set ${set} ${KEY} ! --update-counters`;
}

function add(set: string): string {
  return `-j SET --add-set ${set} ${KEY}`;
}

/**
 * The rules of one deciding match (`target` allows or drops). With flows, four rules, each
 * packet counted by exactly one of those carrying the comment:
 *
 *   1. the element exists: count the packet in it, verdict;
 *   2. add the element (its counters start with this packet; no comment: it does not terminate);
 *   3. the element exists now: verdict, without counting the packet again;
 *   4. it does not (the set is full): the verdict through SY-FLOWFULL-ALLOW / -DROP.
 *
 * Only new connections reach policy chains (established ones are accepted first), so for allow
 * the counted packets are connections; for deny, dropped packets. A packet that races the
 * creation of its element on another CPU gets its verdict at 3 without being counted in the set.
 */
export function decision(
  flows: FlowSets | undefined,
  match: string,
  commentId: string,
  verdict: 'allow' | 'deny',
  ruleId: string,
  target: string,
): string[] {
  const plain = line(match, comment(commentId), target);
  if (!flows) return [plain];
  const set = flowSetName(flows.family, flowRuleTag(verdict, ruleId));
  const full = verdict === 'allow' ? `-g ${FLOW_FULL_ALLOW_CHAIN}` : `-j ${FLOW_FULL_DROP_CHAIN}`;
  return [
    line(match, counting(set), comment(commentId), target),
    line(match, add(set)),
    line(match, present(set), comment(commentId), target),
    line(match, comment(commentId), full),
  ];
}

/**
 * A GlobalPolicy Log rule, which does not terminate: the next rule runs whatever happens here.
 * Without flows it only counts. With flows, its packets are aggregated under verdict `log`:
 *
 *   1. the element exists: count the packet in it;
 *   2. it does not: add it (the add counts the packet);
 *   3. still missing (the set is full): through SY-FLOWFULL-LOG, which counts and returns.
 *
 * Rules 1 and 2 carry the comment and exclude each other, so counters see each packet once.
 */
export function logRules(flows: FlowSets | undefined, match: string, ruleId: string): string[] {
  if (!flows) return [line(match, comment(ruleId))];
  const set = flowSetName(flows.family, flowRuleTag('log', ruleId));
  return [
    line(match, counting(set), comment(ruleId)),
    line(match, absent(set), comment(ruleId), add(set)),
    line(match, absent(set), `-j ${FLOW_FULL_LOG_CHAIN}`),
  ];
}

const ESTABLISHED = '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT';
const INVALID = '-m conntrack --ctstate INVALID -j DROP';
const FORWARD_ESTABLISHED = '-m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL';

/**
 * An endpoint chain's conntrack rules. With flows, established packets in the original direction
 * are counted per 4-tuple in the traffic set first (match and accept; else add, which counts; else
 * the set is full: SY-FLOWFULL-TRAFFIC counts and accepts); replies and related packets are
 * accepted as before. The first endpoint chain a packet meets accepts it, so each packet is
 * counted once on the node.
 */
export function conntrackRules(flows: FlowSets | undefined): string[] {
  if (!flows) return [ESTABLISHED, INVALID];
  const set = trafficSetName(flows.family);
  return [
    line(FORWARD_ESTABLISHED, counting(set), '-j ACCEPT'),
    line(FORWARD_ESTABLISHED, add(set)),
    line(FORWARD_ESTABLISHED, absent(set), `-j ${FLOW_FULL_TRAFFIC_CHAIN}`),
    ESTABLISHED,
    INVALID,
  ];
}

/** The SY-FLOWFULL chains: the verdict each was reached for, counted. */
export function flowFullChains(): { name: string; rules: string[] }[] {
  return [
    { name: FLOW_FULL_ALLOW_CHAIN, rules: [`-j MARK --set-xmark ${ACCEPT_MARK}/${ACCEPT_MARK}`] },
    { name: FLOW_FULL_DROP_CHAIN, rules: ['-j DROP'] },
    { name: FLOW_FULL_LOG_CHAIN, rules: ['-j RETURN'] },
    { name: FLOW_FULL_TRAFFIC_CHAIN, rules: ['-j ACCEPT'] },
  ];
}
