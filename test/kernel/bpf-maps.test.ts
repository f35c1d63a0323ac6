import { afterEach, expect, it } from 'vitest';
import {
  Assembler,
  BpfCapacityError,
  BpfExistsError,
  BpfMap,
  codecs,
  MapOfMaps,
  PerCpuMap,
  possibleCpuCount,
  Program,
  R0,
  R1,
  R2,
  R10,
  type MapBase,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';

describeKernel('bpf: maps', () => {
  const opened: { close(): void }[] = [];
  function track<T extends { close(): void }>(object: T): T {
    opened.push(object);
    return object;
  }
  afterEach(() => {
    for (const object of opened.splice(0)) object.close();
  });

  it('looks up, updates, deletes and iterates a hash map, with update modes', () => {
    const map = track(
      BpfMap.create({ type: 'hash', name: 'kv', key: codecs.u32, value: codecs.u64, maxEntries: 4 }),
    );
    map.update(1, 10n);
    map.update(2, 20n, 'noexist');
    expect(() => map.update(2, 21n, 'noexist')).toThrow(BpfExistsError);
    expect(() => map.update(3, 30n, 'exist')).toThrow(/ENOENT/);
    expect(map.lookup(2)).toBe(20n);
    expect(map.lookup(3)).toBeUndefined();
    expect(new Map(map.entries())).toEqual(
      new Map([
        [1, 10n],
        [2, 20n],
      ]),
    );
    expect(map.delete(1)).toBe(true);
    expect(map.delete(1)).toBe(false);
    map.update(3, 3n);
    map.update(4, 4n);
    map.update(5, 5n);
    const full = (() => {
      try {
        map.update(6, 6n);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(full).toBeInstanceOf(BpfCapacityError);
    expect((full as Error).message).toMatch(/raise max_entries/);
  });

  it('moves many entries with the batch operations', () => {
    const map = track(
      BpfMap.create({ type: 'hash', name: 'bulk', key: codecs.u32, value: codecs.u32, maxEntries: 20_000 }),
    );
    const entries = Array.from({ length: 10_000 }, (_, i) => [i, i * 3] as const);
    expect(map.updateBatch(entries, 'any', 1000)).toBe(10_000);
    const read = map.lookupBatch(512);
    expect(read).toHaveLength(10_000);
    expect(new Map(read)).toEqual(new Map(entries));
    expect(map.deleteBatch(Array.from({ length: 5000 }, (_, i) => i * 2))).toBe(5000);
    expect([...map.keys()]).toHaveLength(5000);
    expect(map.lookup(2)).toBeUndefined();
    expect(map.lookup(3)).toBe(9);
  });

  it('matches longest prefixes in an LPM trie and batch-loads it', () => {
    const trie = track(
      BpfMap.create({
        type: 'lpm_trie',
        name: 'cidrs',
        key: codecs.ipv4LpmKey,
        value: codecs.u32,
        maxEntries: 1024,
      }),
    );
    trie.updateBatch([
      ['198.18.0.0/15', 1],
      ['198.18.5.0/24', 2],
      ['198.18.5.5/32', 3],
    ]);
    expect(trie.lookup('198.18.5.5')).toBe(3);
    expect(trie.lookup('198.18.5.6')).toBe(2);
    expect(trie.lookup('198.19.1.1')).toBe(1);
    expect(trie.lookup('10.0.0.1')).toBeUndefined();
    expect([...trie.keys()].sort()).toEqual(['198.18.0.0/15', '198.18.5.0/24', '198.18.5.5/32']);
  });

  it('sums per-CPU values written by a program on every CPU', () => {
    const counters = track(
      PerCpuMap.create({
        type: 'percpu_array',
        name: 'hits',
        key: codecs.u32,
        value: codecs.u64n,
        maxEntries: 1,
      }),
    );
    const program = track(
      Program.load({
        name: 'count_hits',
        type: 'xdp',
        maps: { counters },
        instructions: new Assembler()
          .st('w', R10, -4, 0)
          .mov64(R2, R10)
          .add64(R2, -4)
          .ldMap(R1, 'counters')
          .call('map_lookup_elem')
          .jeq(R0, 0, 'out')
          .mov64(R1, 1)
          .atomicAdd('dw', R0, 0, R1)
          .label('out')
          .exitWith(2)
          .assemble(),
      }),
    );
    const cpus = possibleCpuCount();
    // XDP test runs execute on whichever CPU this thread is on; the sum must see them all.
    for (let i = 0; i < 20; i++) program.testRun({ data: Buffer.alloc(64), repeat: 50 });
    const perCpu = counters.lookup(0) ?? [];
    expect(perCpu).toHaveLength(cpus);
    expect(counters.lookupSum(0)).toBe(1000);

    const distinct = Array.from({ length: cpus }, (_, cpu) => 100 + cpu);
    counters.update(0, distinct);
    expect(counters.lookup(0)).toEqual(distinct);
    expect(counters.lookupSum(0)).toBe(distinct.reduce((a, b) => a + b, 0));
    counters.update(0, 0);
    expect(counters.lookupSum(0)).toBe(0);
  });

  it('swaps inner maps of a map-of-maps atomically as seen by a program', () => {
    const make = (name: string, value: number): MapBase => {
      const inner = track(
        BpfMap.create({ type: 'array', name, key: codecs.u32, value: codecs.u32, maxEntries: 1 }),
      );
      inner.update(0, value);
      return inner;
    };
    const blue = make('blue', 111);
    const green = make('green', 222);
    const outer = track(
      MapOfMaps.create({
        type: 'array_of_maps',
        name: 'active',
        key: codecs.u32,
        maxEntries: 1,
        innerTemplate: blue,
      }),
    );
    outer.set(0, blue);
    // Returns the value of element 0 of the inner map at outer[0].
    const program = track(
      Program.load({
        name: 'read_inner',
        type: 'xdp',
        maps: { outer },
        instructions: new Assembler()
          .st('w', R10, -4, 0)
          .mov64(R2, R10)
          .add64(R2, -4)
          .ldMap(R1, 'outer')
          .call('map_lookup_elem')
          .jeq(R0, 0, 'none')
          .mov64(R1, R0)
          .mov64(R2, R10)
          .add64(R2, -4)
          .call('map_lookup_elem')
          .jeq(R0, 0, 'none')
          .ldxw(R0, R0, 0)
          .exit()
          .label('none')
          .exitWith(0)
          .assemble(),
      }),
    );
    expect(program.testRun({ data: Buffer.alloc(64) }).retval).toBe(111);
    outer.set(0, green);
    expect(program.testRun({ data: Buffer.alloc(64) }).retval).toBe(222);
    expect(outer.innerId(0)).toBe(green.info.id);
    const reopened = track(
      outer.openInner(0, codecs.u32, codecs.u32) ??
        BpfMap.create({ type: 'array', key: codecs.u32, value: codecs.u32, maxEntries: 1 }),
    );
    expect(reopened.lookup(0)).toBe(222);
  });

  it('evicts from an LRU hash instead of failing, and keeps per-CPU hash values per CPU', () => {
    const lru = track(
      BpfMap.create({
        type: 'lru_hash',
        name: 'conntrack',
        key: codecs.u32,
        value: codecs.u32,
        maxEntries: 128,
      }),
    );
    for (let i = 0; i < 1000; i++) lru.update(i, i);
    const kept = [...lru.keys()];
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThanOrEqual(128);
    expect(lru.lookup(999)).toBe(999);

    const perCpu = track(
      PerCpuMap.create({
        type: 'percpu_hash',
        name: 'bytes',
        key: codecs.u32,
        value: codecs.u64,
        maxEntries: 8,
      }),
    );
    perCpu.update(7, 5n);
    expect(perCpu.lookup(7)).toEqual(Array.from({ length: possibleCpuCount() }, () => 5n));
    expect(perCpu.lookupSum(7)).toBe(5n * BigInt(possibleCpuCount()));
    expect(new Map(perCpu.lookupBatch())).toEqual(
      new Map([[7, Array.from({ length: possibleCpuCount() }, () => 5n)]]),
    );
  });

  it('drains a per-CPU hash with lookup-and-delete batches, leaving it empty', () => {
    const perCpu = track(
      PerCpuMap.create({
        type: 'percpu_hash',
        name: 'drain',
        key: codecs.u32,
        value: codecs.u64,
        maxEntries: 4096,
      }),
    );
    for (let k = 0; k < 3000; k++) perCpu.update(k, BigInt(k));
    const drained = perCpu.lookupAndDeleteBatch(256);
    expect(drained).toHaveLength(3000);
    expect(drained.every(([k, v]) => v.every((x) => x === BigInt(k)))).toBe(true);
    expect(perCpu.lookupBatch()).toEqual([]);
    perCpu.update(1, 9n);
    expect(perCpu.lookupAndDeleteBatch().map(([k]) => k)).toEqual([1]);
  });

  it('keys inner maps by hash in a hash-of-maps', () => {
    const template = track(
      BpfMap.create({ type: 'hash', name: 'tmpl', key: codecs.u32, value: codecs.u32, maxEntries: 8 }),
    );
    const byEndpoint = track(
      MapOfMaps.create({
        type: 'hash_of_maps',
        name: 'per_ep',
        key: codecs.ipv4,
        maxEntries: 8,
        innerTemplate: template,
      }),
    );
    const rules = track(
      BpfMap.create({ type: 'hash', name: 'rules_a', key: codecs.u32, value: codecs.u32, maxEntries: 8 }),
    );
    rules.update(80, 1);
    byEndpoint.set('198.18.0.5', rules);
    expect([...byEndpoint.keys()]).toEqual(['198.18.0.5']);
    const inner = byEndpoint.openInner('198.18.0.5', codecs.u32, codecs.u32);
    if (inner) track(inner);
    expect(inner?.lookup(80)).toBe(1);
    expect(byEndpoint.delete('198.18.0.5')).toBe(true);
    expect(byEndpoint.innerId('198.18.0.5')).toBeUndefined();
  });

  it('points many indices of an array-of-maps at their inner maps in one batch', () => {
    const template = track(
      BpfMap.create({ type: 'hash', name: 'tmpl2', key: codecs.u32, value: codecs.u32, maxEntries: 8 }),
    );
    const outer = track(
      MapOfMaps.create({
        type: 'array_of_maps',
        name: 'many',
        key: codecs.u32,
        maxEntries: 8,
        innerTemplate: template,
      }),
    );
    const inners = [1, 2, 3].map((n) =>
      track(
        BpfMap.create({
          type: 'hash',
          name: `inner_${n}`,
          key: codecs.u32,
          value: codecs.u32,
          maxEntries: 8,
        }),
      ),
    );
    outer.setMany(inners.map((m, i) => [i + 1, m] as const));
    expect([1, 2, 3].map((k) => outer.innerId(k))).toEqual(inners.map((m) => m.info.id));
    // A batch replaces what is there, element by element.
    outer.setMany([[2, inners[0] as BpfMap<number, number>]]);
    expect(outer.innerId(2)).toBe(inners[0]?.info.id);
  });

  it('refuses codecs that do not match a map it reopens', () => {
    const map = track(
      BpfMap.create({ type: 'hash', name: 'shape', key: codecs.u32, value: codecs.u64, maxEntries: 1 }),
    );
    expect(() => BpfMap.fromId(map.info.id, codecs.u64, codecs.u64)).toThrow(/key 4 B/);
  });
});
