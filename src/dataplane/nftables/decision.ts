/**
 * The nft rules that carry out a decision, shared by the rule walk (ruleset.ts) and the decision
 * tables (table.ts): counters under the rule's id, NFLOG for Log rules and flow logs, the verdict.
 * Both renderings name and log a decision the same way, so counters and flow records read alike.
 */
import {
  FLOWLOG_BURST,
  FLOWLOG_COUNTER,
  FLOWLOG_LIMIT,
  FLOWLOG_RATE,
  FLOWLOG_SNAPLEN,
  FLOWLOG_THRESHOLD,
  logPrefix,
  NFLOG_GROUP,
  quoted,
} from './names.js';
import type { NftSet } from './objects.js';

export function withMatch(match: string, rest: string): string {
  return match ? `${match} ${rest}` : rest;
}

/** A Log rule: counted under its id and sent to NFLOG as `sy <id> `; the walk goes on. */
export function logRule(match: string, ruleId: string): string {
  return withMatch(
    match,
    `counter log prefix "${logPrefix('log', ruleId)}" group ${NFLOG_GROUP} comment ${quoted(ruleId)}`,
  );
}

/**
 * One deciding match (`verdict`: `return` allows, `drop` denies, '' falls off the chain = allow).
 * With flow logs, two rules with the same counter and comment (so counters add up to the packets
 * that matched): first the packets over the shared rate limit (the named `limit … rate over`
 * object takes a token from every packet it does not match), counted again in the named counter
 * that reports what was not logged; then the rest, logged to NFLOG with `sy A|D <rule id> `.
 * Only new connections reach policy chains (established ones are accepted first), so an allowed
 * connection is logged by its first packet.
 */
export function decision(
  flowLogs: boolean,
  match: string,
  kind: 'allow' | 'deny',
  ruleId: string,
  verdict: string,
  comment: string,
): string[] {
  const tail = `${verdict ? `${verdict} ` : ''}comment ${quoted(comment)}`;
  if (!flowLogs) return [withMatch(match, `counter ${tail}`)];
  const log = `log prefix "${logPrefix(kind, ruleId)}" group ${NFLOG_GROUP} snaplen ${FLOWLOG_SNAPLEN} queue-threshold ${FLOWLOG_THRESHOLD}`;
  return [
    withMatch(
      match,
      `limit name "${FLOWLOG_LIMIT}" counter counter name "${FLOWLOG_COUNTER}" ${verdict || 'return'} comment ${quoted(comment)}`,
    ),
    withMatch(match, `counter ${log} ${tail}`),
  ];
}

/** The named limit and counter the flow-log rules share. */
export function flowLogObjects(): NftSet[] {
  return [
    {
      kind: 'limit',
      name: FLOWLOG_LIMIT,
      spec: `{ rate over ${FLOWLOG_RATE} burst ${FLOWLOG_BURST} packets; }`,
      elements: [],
      note: 'flow logs: decisions beyond this rate are not sent to NFLOG',
    },
    {
      kind: 'counter',
      name: FLOWLOG_COUNTER,
      spec: '',
      elements: [],
      note: 'flow logs: decisions not logged (over the rate limit)',
    },
  ];
}
