/**
 * The text of single policy rules, shared by the rule walk (render-rules.ts) and the decision
 * table (render-table.ts): both must count, log and decide a packet with exactly the same rules,
 * so counters and flow logs read the same whichever rendered it.
 */
import type { Protocol } from '../../ir/types.js';
import {
  ALLOW_CHAIN,
  commentText,
  FLOWLOG_ALLOW_CHAIN,
  FLOWLOG_BURST,
  FLOWLOG_DROP_CHAIN,
  FLOWLOG_HASHLIMIT,
  FLOWLOG_RATE,
  FLOWLOG_SNAPLEN,
  FLOWLOG_THRESHOLD,
  flowLogPrefix,
  NFLOG_GROUP,
  nflogPrefix,
  quote,
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

/** A GlobalPolicy Log rule's target: NFLOG under the bare rule id, which does not terminate. */
export function logTarget(ruleId: string): string {
  return `-j NFLOG --nflog-group ${NFLOG_GROUP} --nflog-prefix ${quote(nflogPrefix(ruleId))}`;
}

const OVER_LIMIT = `-m hashlimit --hashlimit-above ${FLOWLOG_RATE} --hashlimit-burst ${FLOWLOG_BURST} --hashlimit-name ${FLOWLOG_HASHLIMIT}`;

/**
 * The rules of one deciding match (`target` allows or drops). With flow logs, three rules:
 *
 *   1. over the shared rate limit: the same verdict through SY-FLOWLOG-ALLOW / SY-FLOWLOG-DROP,
 *      whose counters say how many decisions went unlogged (same comment: counted for the rule);
 *   2. NFLOG `sy A|D <rule id>` (no comment: counters never see it; NFLOG does not terminate);
 *   3. the verdict itself, as without flow logs.
 *
 * xt_hashlimit consumes a token from the one bucket whenever it does not match, so rule 1 lets
 * exactly the under-limit packets through to rule 2. Only new connections reach policy chains
 * (established ones are accepted first), so "allowed" means the first packet of a connection.
 */
export function decision(
  flowLogs: boolean,
  match: string,
  commentId: string,
  verdict: 'allow' | 'deny',
  ruleId: string,
  target: string,
): string[] {
  const plain = line(match, comment(commentId), target);
  if (!flowLogs) return [plain];
  const over = verdict === 'allow' ? `-g ${FLOWLOG_ALLOW_CHAIN}` : `-j ${FLOWLOG_DROP_CHAIN}`;
  return [
    line(match, OVER_LIMIT, comment(commentId), over),
    line(
      match,
      `-j NFLOG --nflog-group ${NFLOG_GROUP} --nflog-prefix ${quote(flowLogPrefix(verdict, ruleId))}`,
      `--nflog-size ${FLOWLOG_SNAPLEN} --nflog-threshold ${FLOWLOG_THRESHOLD}`,
    ),
    plain,
  ];
}
