/**
 * The eBPF backend numbers a node's sets and counter slots stably, and tells the apply's later
 * steps what one update changed (recordChange): the counters to zero, the counter map's size and
 * the programs whose numbers stayed are then known without a pass over every slot of the node.
 * Checked against a from-scratch numbering over random updates.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  allocate,
  nodeView,
  numberedFrom,
  recordChange,
  type Allocation,
  type NodeView,
} from '../../src/dataplane/ebpf/node.js';
import { programNumbers } from '../../src/dataplane/ebpf/program-cache.js';
import type { RuleSet } from '../../src/ir/types.js';
import { compileIR, modelOf, namespace, networkPolicy, pod } from '../support/manifests.js';

/**
 * The numbering rule, written out plainly: a number belongs to a key that goes (until the next
 * update) or else to the first wanted key that held it; every other key takes the lowest number
 * nobody holds.
 */
function reference(wanted: readonly string[], previous: Record<string, number>): Record<string, number> {
  const holder = new Map<number, string>();
  for (const [key, n] of Object.entries(previous)) if (!wanted.includes(key)) holder.set(n, key);
  for (const key of wanted) {
    const n = previous[key];
    if (n !== undefined && !holder.has(n)) holder.set(n, key);
  }
  let lowest = 0;
  return Object.fromEntries(
    wanted.map((key) => {
      const n = previous[key];
      if (n !== undefined && holder.get(n) === key) return [key, n];
      do lowest++;
      while (holder.has(lowest));
      holder.set(lowest, key);
      return [key, lowest];
    }),
  );
}

/** A view that numbers only IP sets: the same `stable` numbers slots and tables. */
function setsView(ids: readonly string[]): NodeView {
  return {
    node: 'n1',
    address: undefined,
    endpoints: [],
    ruleSets: [],
    ipSets: ids.map((id) => ({ id, description: id, cidrs: [] })),
    ipPortSets: [],
    prefilters: [],
  };
}

/** A small deterministic generator (tests stay reproducible). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The next key list: some keys leave, some arrive, mostly in the middle, in a stable order. */
function update(keys: readonly string[], rnd: () => number, fresh: () => string): string[] {
  const out = keys.filter(() => rnd() > 0.15);
  const at = Math.floor(rnd() * (out.length + 1));
  const arrivals = Array.from({ length: Math.floor(rnd() * 4) }, fresh);
  out.splice(at, 0, ...arrivals);
  return out;
}

describe('eBPF stable numbering', () => {
  it('numbers every update like the plain rule, and records what came, went and the highest number', () => {
    const rnd = random(21);
    let made = 0;
    const fresh = (): string => `s${made++}`;
    let keys = Array.from({ length: 30 }, fresh);
    let alloc: Allocation = allocate(setsView(keys));
    for (let round = 0; round < 300; round++) {
      const next = update(keys, rnd, fresh);
      const after = allocate(setsView(next), alloc);
      expect(after.sets).toEqual(reference(next, alloc.sets));
      expect(Object.keys(after.sets)).toEqual(next);
      const change = recordChange(after.sets);
      if (after.sets === alloc.sets) expect(numberedFrom(after.sets, alloc.sets)).toBe(false);
      else {
        expect(numberedFrom(after.sets, alloc.sets)).toBe(true);
        const had = new Map(Object.entries(alloc.sets));
        const now = new Set(Object.values(after.sets));
        expect([...(change?.fresh ?? [])].sort((a, b) => a - b)).toEqual(
          Object.entries(after.sets)
            .filter(([key, n]) => had.get(key) !== n)
            .map(([, n]) => n)
            .sort((a, b) => a - b),
        );
        expect([...(change?.freed ?? [])].sort((a, b) => a - b)).toEqual(
          Object.values(alloc.sets)
            .filter((n) => !now.has(n))
            .sort((a, b) => a - b),
        );
        expect(change?.highest).toBe(Math.max(0, ...Object.values(after.sets)));
      }
      keys = next;
      alloc = after;
    }
  });

  it('hands back the very record when nothing came or went', () => {
    const a = allocate(setsView(['a', 'b', 'c']));
    expect(allocate(setsView(['a', 'b', 'c']), a).sets).toBe(a.sets);
  });

  it('numbers a damaged record (two keys with one number) like the plain rule, recording nothing', () => {
    const previous: Allocation = { sets: { a: 1, b: 1, c: 2 }, portSets: {}, slots: {}, tables: {} };
    const after = allocate(setsView(['a', 'b', 'd']), previous);
    expect(after.sets).toEqual(reference(['a', 'b', 'd'], previous.sets));
    expect(new Set(Object.values(after.sets)).size).toBe(3);
    expect(recordChange(after.sets)).toBeUndefined();
  });

  it('lets a record go once nothing but the records numbered after it holds it', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const rnd = random(7);
    let n = 0;
    const fresh = (): string => `k${n++}`;
    let keys = Array.from({ length: 30 }, fresh);
    let alloc = allocate(setsView(keys));
    const first = new WeakRef(alloc.sets);
    for (let i = 0; i < 50; i++) {
      keys = update(keys, rnd, fresh);
      alloc = allocate(setsView(keys), alloc);
    }
    // WeakRef targets stay alive until the job that made or read them ends.
    await new Promise((r) => setTimeout(r, 0));
    gc();
    // Before, each record's change held the one before it: an agent kept every record it ever
    // numbered, one per relabel.
    expect(first.deref()).toBeUndefined();
  });
});

function cluster(webApp: string): ReturnType<typeof nodeView> {
  const ir = compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.0.10', node: 'n1' }),
      pod('shop', 'web', { labels: { app: webApp }, ip: '198.18.0.11', node: 'n1' }),
      networkPolicy('shop', 'db-from-web', {
        podSelector: { matchLabels: { app: 'db' } },
        policyTypes: ['Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
      }),
      networkPolicy('shop', 'web-in', {
        podSelector: { matchLabels: { app: 'web' } },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 80 }] }],
        egress: [{ to: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 5432 }] }],
      }),
    ]),
  );
  return nodeView(ir, 'n1');
}

describe('eBPF program numbers across a renumbering', () => {
  const fromScratch = (rs: RuleSet, alloc: Allocation): string => programNumbers(structuredClone(rs), alloc);

  it('keeps the numbers of a rule set a relabel left alone, reads a changed one anew', () => {
    const before = cluster('web');
    const first = allocate(before);
    const numbers = new Map(before.ruleSets.map((rs) => [rs, programNumbers(rs, first)]));
    // web is relabelled: its rule sets change, db's objects are reused by the next view.
    const relabelled = cluster('other');
    const db = before.ruleSets.filter((rs) => rs.endpoint === 'shop/db');
    const view: NodeView = {
      ...relabelled,
      ruleSets: relabelled.ruleSets.map(
        (rs) => db.find((d) => d.direction === rs.direction && d.endpoint === rs.endpoint) ?? rs,
      ),
    };
    const next = allocate(view, first);
    expect(next.slots).not.toBe(first.slots);
    expect(numberedFrom(next.slots, first.slots)).toBe(true);
    for (const rs of view.ruleSets) {
      expect(programNumbers(rs, next)).toBe(fromScratch(rs, next));
      if (db.includes(rs)) expect(programNumbers(rs, next)).toBe(numbers.get(rs));
    }
  });

  it('reads the numbers again when the hook is decided by another table index', () => {
    const view = cluster('web');
    const alloc = allocate(view);
    const rs = view.ruleSets[0] as RuleSet;
    programNumbers(rs, alloc);
    const tabled: Allocation = { ...alloc, tables: { [`${rs.endpoint}|${rs.direction}`]: 3 } };
    expect(programNumbers(rs, tabled)).toBe(fromScratch(rs, tabled));
    expect(programNumbers(rs, tabled).endsWith('|3')).toBe(true);
  });
});
