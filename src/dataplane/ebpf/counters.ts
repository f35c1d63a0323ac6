/**
 * Per-rule counters from the kernel: the node's per-CPU counter array summed over CPUs, mapped
 * back to IR rule ids through the slot table the node's description keeps. Prefilter drops come
 * from their own array. Fail-closed slots are listed only once they have counted something.
 */
import { prefilterRuleId } from '../../ir/rule-ids.js';
import { codecs, PerCpuMap } from '../../bpf/index.js';
import type { NodeTarget, RuleCounter } from '../backend.js';
import { counterValue, MAP, type CounterValue } from './layout.js';
import { mapPinPath } from './maps.js';
import { readMeta } from './meta.js';
import { parseSlotKey } from './node.js';
import { nodeDir } from './paths.js';

function openCounters(path: string): PerCpuMap<number, CounterValue> | undefined {
  try {
    return PerCpuMap.fromPin(path, codecs.u32, counterValue);
  } catch {
    return undefined;
  }
}

function sums(map: PerCpuMap<number, CounterValue>): Map<number, CounterValue> {
  const out = new Map<number, CounterValue>();
  for (const [slot, values] of map.lookupBatch(4096)) {
    let packets = 0;
    let bytes = 0;
    for (const v of values) {
      packets += v.packets;
      bytes += v.bytes;
    }
    out.set(slot, { packets, bytes });
  }
  return out;
}

export function readCounters(target: NodeTarget): RuleCounter[] {
  const dir = nodeDir(target.scope, target.node);
  const meta = readMeta(dir);
  if (!meta) return [];
  const out: RuleCounter[] = [];
  const pf = meta.prefilter ? openCounters(mapPinPath(dir, MAP.prefilterCounters)) : undefined;
  if (pf && meta.prefilter) {
    try {
      const values = sums(pf);
      for (const list of meta.prefilter.lists) {
        const v = values.get(list.index) ?? { packets: 0, bytes: 0 };
        out.push({ rule: prefilterRuleId(list.name), ...v });
      }
    } finally {
      pf.close();
    }
  }
  const counters = openCounters(mapPinPath(dir, MAP.counters));
  if (!counters) return out;
  try {
    const values = sums(counters);
    const rows: (RuleCounter & { order: number })[] = [];
    let order = 0;
    for (const [key, slot] of Object.entries(meta.alloc.slots)) {
      const owner = parseSlotKey(key);
      const v = values.get(slot) ?? { packets: 0, bytes: 0 };
      order++;
      if (owner.rule.includes('/fail-closed/') && v.packets === 0) continue;
      rows.push({ rule: owner.rule, endpoint: owner.endpoint, direction: owner.direction, ...v, order });
    }
    rows.sort((a, b) => {
      const ka = `${a.endpoint ?? ''}|${a.direction ?? ''}`;
      const kb = `${b.endpoint ?? ''}|${b.direction ?? ''}`;
      return ka < kb ? -1 : ka > kb ? 1 : a.order - b.order;
    });
    for (const { order: _order, ...row } of rows) out.push(row);
    return out;
  } finally {
    counters.close();
  }
}
