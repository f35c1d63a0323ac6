/**
 * Reading back the iptables backend's flow logs: its NFLOG prefixes (written by render-rules from
 * names.ts, decoded here through the same functions) and the flow-log rate limit's overflow, which
 * the SY-FLOWLOG-ALLOW/-DROP rule counters hold.
 */
import type { NodeTarget } from '../backend.js';
import { runInNetns } from '../exec.js';
import { decodeFlowLogHead, type NflogCodec } from '../netfilter/flow-source.js';
import { flowLogOverLimit } from './counters.js';
import { parseSave, tool, type IptablesMode } from './kernel.js';
import { FAMILIES, flowLogPrefix, nflogPrefix } from './names.js';

export function iptablesNflogCodec(mode: () => IptablesMode): NflogCodec {
  return {
    prefix: (verdict, rule) => (verdict === 'log' ? nflogPrefix(rule) : flowLogPrefix(verdict, rule)),
    decode: (prefix) => decodeFlowLogHead(prefix, (text) => text),
    async overLimit(target: NodeTarget): Promise<number> {
      let total = 0;
      for (const family of FAMILIES) {
        const r = await runInNetns(target.netns, tool(mode(), family, 'save'), ['-c', '-t', 'filter']);
        if (r.code === 0) total += flowLogOverLimit(parseSave(r.stdout, family));
      }
      return total;
    },
  };
}
