/**
 * Reading back the nftables backend's flow logs: its NFLOG prefixes (written by ruleset.ts through
 * names.ts's logPrefix, decoded here) and the flow-log rate limit's overflow, which the named
 * counter `flowlog-lost` holds.
 */
import type { NodeTarget } from '../backend.js';
import { runInNetns } from '../exec.js';
import { decodeFlowLogHead, type NflogCodec } from '../netfilter/flow-source.js';
import { parseNamedCounter } from './counters.js';
import { FAMILY, FLOWLOG_COUNTER, logPrefix, TABLE } from './names.js';

export const nftablesNflogCodec: NflogCodec = {
  prefix: (verdict, rule) => logPrefix(verdict, rule),
  // The kernel hands the prefix back with the trailing space nft wrote; Log rules are `sy <id>`.
  decode: (prefix) =>
    decodeFlowLogHead(prefix.replace(/ $/, ''), (text) => (text.startsWith('sy ') ? text.slice(3) : text)),
  async overLimit(target: NodeTarget): Promise<number> {
    const r = await runInNetns(target.netns, 'nft', [
      '-j',
      'list',
      'counter',
      FAMILY,
      TABLE,
      FLOWLOG_COUNTER,
    ]);
    return r.code === 0 ? parseNamedCounter(r.stdout) : 0;
  },
};
