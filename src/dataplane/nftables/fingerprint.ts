/**
 * What `table inet switchyard` holds, minus what traffic changes (counters, limit and quota
 * state, elements that packets add to dynamic sets, timeouts ticking down): two equal
 * fingerprints mean nobody changed the table in between.
 */
import { createHash } from 'node:crypto';
import { eachItem, streamNftTable } from './json-items.js';
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

/** A set item's name when traffic adds its elements (flags dynamic or timeout): they are left out. */
function dynamicSetName(item: Json): string | undefined {
  const set = item !== null && typeof item === 'object' && !Array.isArray(item) ? item.set : undefined;
  if (set === null || typeof set !== 'object' || Array.isArray(set) || typeof set.name !== 'string')
    return undefined;
  const flags = Array.isArray(set.flags) ? set.flags : [];
  return flags.some((f) => f === 'dynamic' || f === 'timeout') ? set.name : undefined;
}

/**
 * The fingerprint of `nft -j list table` output: the SHA-256 of its items' stable JSON, as one
 * array, hashed item by item as they come (json-items.ts): the digest stringifying the whole
 * parsed document gave, without holding the document (13 MB of JSON at 10k services parsed to
 * ~100 MiB of objects, which every drift check left in the agent's heap).
 */
class Fingerprint {
  private readonly hash = createHash('sha256').update('[');
  private first = true;

  readonly add = (text: string): void => {
    const item = JSON.parse(text) as Json;
    // Only a set's own item names it with its elements: its flags decide, item by item.
    const dynamic = dynamicSetName(item);
    this.hash.update(this.first ? '' : ',');
    this.hash.update(JSON.stringify(stable(item, new Set(dynamic === undefined ? [] : [dynamic]))));
    this.first = false;
  };

  digest(): string {
    return this.hash.update(']').digest('hex');
  }
}

/** The fingerprint of whole `nft -j list table` output. */
export function fingerprintOf(json: string): string {
  const f = new Fingerprint();
  eachItem(json, f.add);
  return f.digest();
}

export async function nftablesFingerprint(netns: string): Promise<string> {
  const f = new Fingerprint();
  return (await streamNftTable(netns, FAMILY, TABLE, f.add)) ? f.digest() : 'absent';
}
