/**
 * What `table inet switchyard` holds, minus what traffic changes (counters, limit and quota
 * state, elements that packets add to dynamic sets, timeouts ticking down): two equal
 * fingerprints mean nobody changed the table in between.
 */
import { createHash } from 'node:crypto';
import { runInNetns } from '../exec.js';
import { FAMILY, TABLE } from './names.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const TRAFFIC_STATE = new Set(['counter', 'handle', 'expires', 'quota']);

function stable(value: Json, dynamicSets: ReadonlySet<string>): Json {
  if (Array.isArray(value)) return value.map((v) => stable(v, dynamicSets));
  if (value === null || typeof value !== 'object') return value;
  const out: { [key: string]: Json } = {};
  const setName = typeof value.name === 'string' ? value.name : undefined;
  for (const [k, v] of Object.entries(value)) {
    if (TRAFFIC_STATE.has(k)) continue;
    if (k === 'elem' && setName && dynamicSets.has(setName)) continue;
    out[k] = stable(v, dynamicSets);
  }
  return out;
}

export async function nftablesFingerprint(netns: string): Promise<string> {
  const r = await runInNetns(netns, 'nft', ['-j', 'list', 'table', FAMILY, TABLE]);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return 'absent';
    throw new Error(`nft list table ${FAMILY} ${TABLE} in ${netns} failed: ${r.stderr.trim()}`);
  }
  const doc = JSON.parse(r.stdout) as { nftables: { set?: { name: string; flags?: string[] } }[] };
  const dynamicSets = new Set(
    doc.nftables
      .map((o) => o.set)
      .filter((s): s is { name: string; flags?: string[] } =>
        Boolean(s?.flags?.some((f) => f === 'dynamic' || f === 'timeout')),
      )
      .map((s) => s.name),
  );
  return createHash('sha256')
    .update(JSON.stringify(stable(doc.nftables as unknown as Json, dynamicSets)))
    .digest('hex');
}
