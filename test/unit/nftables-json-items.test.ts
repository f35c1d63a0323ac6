import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fingerprintOf } from '../../src/dataplane/nftables/fingerprint.js';
import { eachItem, itemKind, NftablesItems } from '../../src/dataplane/nftables/json-items.js';

const itemsOf = (json: string): string[] => {
  const out: string[] = [];
  eachItem(json, (item) => out.push(item));
  return out;
};

/** `nft -j list table` output as nft 1.0.6 prints it (", " and ": " between tokens). */
function nftJson(items: readonly unknown[]): string {
  return JSON.stringify({ nftables: items }, null, 0).replace(/,"/g, ', "').replace(/":/g, '": ');
}

const table = (counter: number, handle: number, flows: readonly unknown[]): unknown[] => [
  { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
  { table: { family: 'inet', name: 'switchyard', handle } },
  {
    set: {
      family: 'inet',
      name: 'peers-1',
      table: 'switchyard',
      type: 'ipv4_addr',
      handle,
      flags: ['interval'],
      elem: [{ prefix: { addr: '198.18.0.0', len: 24 } }],
    },
  },
  {
    set: {
      family: 'inet',
      name: 'flows4',
      table: 'switchyard',
      type: ['ipv4_addr', 'ipv4_addr'],
      handle,
      flags: ['dynamic', 'timeout'],
      timeout: 60,
      elem: flows,
    },
  },
  { chain: { family: 'inet', table: 'switchyard', name: 'ep-a-in', handle } },
  {
    rule: {
      family: 'inet',
      table: 'switchyard',
      chain: 'ep-a-in',
      handle,
      comment: 'np:x/p "{[0]}" \\ingress/0',
      expr: [
        { match: { op: '==', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: '@peers-1' } },
        { counter: { packets: counter, bytes: counter * 60 } },
        { accept: null },
      ],
    },
  },
];

/** The fingerprint as computed before (the whole document parsed, then stringified). */
function wholeDocumentFingerprint(json: string): string {
  type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
  const doc = JSON.parse(json) as { nftables: { set?: { name: string; flags?: string[] } }[] };
  const dynamic = new Set(
    doc.nftables
      .filter((o) => o.set?.flags?.some((f) => f === 'dynamic' || f === 'timeout'))
      .map((o) => o.set?.name),
  );
  const stable = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(stable);
    if (v === null || typeof v !== 'object') return v;
    const out: { [k: string]: Json } = {};
    for (const [k, x] of Object.entries(v)) {
      if (['counter', 'handle', 'expires', 'quota'].includes(k)) continue;
      if (k === 'elem' && typeof v.name === 'string' && dynamic.has(v.name)) continue;
      out[k] = stable(x);
    }
    return out;
  };
  return createHash('sha256')
    .update(JSON.stringify(stable(doc.nftables as unknown as Json)))
    .digest('hex');
}

describe('nft -j output read item by item', () => {
  it('yields each item whole, strings with braces, brackets and escaped quotes included', () => {
    const items = table(3, 7, []);
    const texts = itemsOf(nftJson(items));
    expect(texts.map((t) => JSON.parse(t) as unknown)).toEqual(items);
    expect(texts.map(itemKind)).toEqual(['metainfo', 'table', 'set', 'set', 'chain', 'rule']);
    expect(itemsOf('{"nftables": []}')).toEqual([]);
  });

  it('reads the same items from output pushed in pieces of any size (as a pipe delivers it)', () => {
    const json = nftJson(table(3, 7, []));
    for (const size of [1, 2, 7, 64, json.length]) {
      const out: string[] = [];
      const items = new NftablesItems((item) => out.push(item));
      for (let i = 0; i < json.length; i += size) items.push(json.slice(i, i + size));
      items.end();
      expect(out, `pieces of ${size}`).toEqual(itemsOf(json));
    }
  });

  it('refuses output that is not an nftables array or is cut short', () => {
    expect(() => itemsOf('{"other": []}')).toThrow(/no "nftables" array/);
    expect(() => itemsOf('{"nftables": [{"rule": {"comment": "a}')).toThrow(/does not end/);
    expect(() => itemsOf('{"nftables": [{"rule": {}}, 1]}')).toThrow(/not an object/);
  });

  it('fingerprints as the whole document did, blind to counters, handles and dynamic sets’ elements', () => {
    const quiet = nftJson(table(0, 1, []));
    const busy = nftJson(
      table(5, 9, [{ elem: { val: { concat: ['198.18.0.1', '198.18.0.2'] }, expires: 30 } }]),
    );
    expect(fingerprintOf(quiet)).toBe(wholeDocumentFingerprint(quiet));
    expect(fingerprintOf(busy)).toBe(wholeDocumentFingerprint(busy));
    expect(fingerprintOf(busy)).toBe(fingerprintOf(quiet));
    // A static set's member changed behind the agent's back: a different fingerprint.
    const tampered = quiet.replace('198.18.0.0', '198.18.1.0');
    expect(fingerprintOf(tampered)).not.toBe(fingerprintOf(quiet));
    expect(fingerprintOf(tampered)).toBe(wholeDocumentFingerprint(tampered));
  });
});
