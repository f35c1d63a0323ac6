import {
  getFdById,
  mapBatch,
  mapCreate,
  mapDeleteElem,
  mapGetNextKey,
  mapLookupElem,
  mapUpdateElem,
  objInfo,
  scratchLayout,
} from './commands.js';
import { alignUp, u32, type Codec } from './codecs.js';
import {
  BpfCommand,
  MAP_TYPES,
  MapFlags,
  updateModeFlag,
  type MapType,
  type UpdateMode,
} from './constants.js';
import { possibleCpuCount } from './cpus.js';
import { bpfError } from './errors.js';
import { needing, type FeatureName } from './features.js';
import { BpfObject } from './object.js';
import { openPinnedFd } from './pins.js';
import { closeFd, scratch, type NativeBlock } from './sys.js';

const ENOENT = 2;
const ENOSPC = 28;

export interface MapInfo {
  type: number;
  typeName: string;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

const mapTypeNames = new Map<number, string>(Object.entries(MAP_TYPES).map(([name, id]) => [id, name]));

/** struct bpf_map_info (the fields up to map_extra). */
export function readMapInfo(fd: number): MapInfo {
  const info = objInfo(fd, 88, `map fd ${fd}`);
  const type = info.readUInt32LE(0);
  return {
    type,
    typeName: mapTypeNames.get(type) ?? `type ${type}`,
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: cString(info.subarray(24, 40)),
  };
}

/** Key and value addresses in the shared scratch block, recomputed only when the block moves. */
class ElementScratch {
  private block: NativeBlock | undefined;
  keyAddress = 0n;
  valueAddress = 0n;
  nextKeyAddress = 0n;
  readonly valueOffset: number;
  readonly nextKeyOffset: number;
  private readonly totalSize: number;

  constructor(keySize: number, valueBytes: number) {
    this.valueOffset = alignUp(Math.max(keySize, 1), 8);
    this.nextKeyOffset = this.valueOffset + alignUp(Math.max(valueBytes, 1), 8);
    this.totalSize = this.nextKeyOffset + alignUp(Math.max(keySize, 1), 8);
  }

  /** The scratch buffer laid out as key | value | next key (hot path: no allocation). */
  acquire(): Buffer {
    const block = scratch.reserve(this.totalSize);
    if (block !== this.block) {
      this.block = block;
      this.keyAddress = block.address;
      this.valueAddress = block.address + BigInt(this.valueOffset);
      this.nextKeyAddress = block.address + BigInt(this.nextKeyOffset);
    }
    return block.buffer;
  }
}

/** What every map kind shares: an fd, its kernel-reported shape, pinning. */
export abstract class MapBase extends BpfObject {
  readonly info: MapInfo;

  protected constructor(fd: number, info?: MapInfo) {
    super(fd);
    this.info = info ?? readMapInfo(fd);
  }

  get name(): string {
    return this.info.name;
  }

  get description(): string {
    return `map '${this.info.name}' (${this.info.typeName})`;
  }

  protected fail(errno: number, operation: string, detail?: string): never {
    throw bpfError(errno, { operation, subject: this.description }, detail);
  }
}

/** A map (a pin, an id) whose key or value size is not what the codecs read and write. */
export class MapShapeError extends Error {}

function checkShape(info: MapInfo, keySize: number, valueSize: number, what: string): void {
  if (info.keySize !== keySize || info.valueSize !== valueSize)
    throw new MapShapeError(
      `${what}: map '${info.name}' has key ${info.keySize} B / value ${info.valueSize} B but the codecs are ${keySize} B / ${valueSize} B`,
    );
}

function createFd(
  type: MapType,
  name: string | undefined,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  flags: number,
  innerMapFd?: number,
): number {
  const subject = `map '${name ?? ''}' (${type})`;
  const create = (): number =>
    mapCreate({ mapType: MAP_TYPES[type], keySize, valueSize, maxEntries, flags, innerMapFd, name }, subject);
  const feature = MAP_TYPE_FEATURES[type];
  return feature ? needing(feature, create) : create();
}

/** Map types newer than the oldest kernels: a refusal to create one is explained by a probe. */
const MAP_TYPE_FEATURES: Partial<Record<MapType, FeatureName>> = { lpm_trie: 'lpm_trie', ringbuf: 'ringbuf' };

/** Checks that an adopted fd's map fits the codecs (closing the fd if not) and returns its info. */
function adoptFd(fd: number, keySize: number, valueSize: number, what: string): MapInfo {
  const info = readMapInfo(fd);
  try {
    checkShape(info, keySize, valueSize, what);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return info;
}

/** A NUL-terminated name field of a kernel info struct. */
export function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.toString('utf8', 0, end < 0 ? bytes.length : end);
}

/** Typed access to keys and values through codecs, for both plain and per-CPU maps. */
abstract class KeyedMap<K, V, Stored> extends MapBase {
  protected readonly scratch: ElementScratch;
  /** Bytes one element's value occupies in user memory (per-CPU maps: one slot per CPU). */
  protected readonly valueBytes: number;

  protected constructor(
    fd: number,
    readonly keyCodec: Codec<K>,
    readonly valueCodec: Codec<V>,
    info?: MapInfo,
  ) {
    super(fd, info);
    this.valueBytes = this.storedValueBytes();
    this.scratch = new ElementScratch(this.info.keySize, this.valueBytes);
  }

  protected abstract storedValueBytes(): number;
  protected abstract encodeValue(value: Stored, target: Buffer, offset: number): void;
  protected abstract decodeValue(source: Buffer, offset: number): Stored;

  /** The value for `key`, or undefined when absent. */
  lookup(key: K): Stored | undefined {
    const buffer = this.scratch.acquire();
    this.keyCodec.encode(key, buffer, 0);
    const result = mapLookupElem(this.fd, this.scratch.keyAddress, this.scratch.valueAddress);
    if (result === -ENOENT) return undefined;
    if (result < 0) this.fail(-result, 'BPF_MAP_LOOKUP_ELEM');
    return this.decodeValue(buffer, this.scratch.valueOffset);
  }

  has(key: K): boolean {
    return this.lookup(key) !== undefined;
  }

  /** Inserts or replaces; `mode` 'noexist' refuses to replace, 'exist' refuses to insert. */
  update(key: K, value: Stored, mode: UpdateMode = 'any'): void {
    const buffer = this.scratch.acquire();
    this.keyCodec.encode(key, buffer, 0);
    this.encodeValue(value, buffer, this.scratch.valueOffset);
    const result = mapUpdateElem(
      this.fd,
      this.scratch.keyAddress,
      this.scratch.valueAddress,
      updateModeFlag[mode],
    );
    if (result < 0) this.fail(-result, 'BPF_MAP_UPDATE_ELEM');
  }

  /** Removes `key`; false when it was not there. */
  delete(key: K): boolean {
    const buffer = this.scratch.acquire();
    this.keyCodec.encode(key, buffer, 0);
    const result = mapDeleteElem(this.fd, this.scratch.keyAddress);
    if (result === -ENOENT) return false;
    if (result < 0) this.fail(-result, 'BPF_MAP_DELETE_ELEM');
    return true;
  }

  /** Walks keys with BPF_MAP_GET_NEXT_KEY; safe against other map calls between steps. */
  *keys(): Generator<K> {
    const keySize = this.info.keySize;
    let current: Buffer | undefined;
    for (;;) {
      const buffer = this.scratch.acquire();
      if (current) current.copy(buffer, 0);
      const result = mapGetNextKey(
        this.fd,
        current ? this.scratch.keyAddress : 0n,
        this.scratch.nextKeyAddress,
      );
      if (result === -ENOENT) return;
      if (result < 0) this.fail(-result, 'BPF_MAP_GET_NEXT_KEY');
      current = Buffer.from(
        buffer.subarray(this.scratch.nextKeyOffset, this.scratch.nextKeyOffset + keySize),
      );
      yield this.keyCodec.decode(current, 0);
    }
  }

  /** Key/value pairs; keys deleted meanwhile are skipped. */
  *entries(): Generator<[K, Stored]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value !== undefined) yield [key, value];
    }
  }

  /** Deletes every key (one syscall per key); returns how many went. */
  clear(): number {
    let removed = 0;
    for (const key of [...this.keys()]) if (this.delete(key)) removed++;
    return removed;
  }

  /**
   * Reads the whole map with BPF_MAP_LOOKUP_BATCH, `batchSize` elements per syscall. Much cheaper
   * than keys() + lookup() for large maps.
   */
  lookupBatch(batchSize = 1024): [K, Stored][] {
    return this.batchRead(BpfCommand.MAP_LOOKUP_BATCH, 'BPF_MAP_LOOKUP_BATCH', batchSize);
  }

  /**
   * Reads and removes the whole map with BPF_MAP_LOOKUP_AND_DELETE_BATCH (hash maps): each bucket
   * is copied out and emptied under its lock, so a program's update lands either in what this
   * returns or in the map afterwards. How the agent drains counters aggregated in the kernel.
   */
  lookupAndDeleteBatch(batchSize = 1024): [K, Stored][] {
    return this.batchRead(
      BpfCommand.MAP_LOOKUP_AND_DELETE_BATCH,
      'BPF_MAP_LOOKUP_AND_DELETE_BATCH',
      batchSize,
    );
  }

  private batchRead(cmd: number, name: string, batchSize: number): [K, Stored][] {
    const keySize = this.info.keySize;
    const tokenSize = Math.max(keySize, 8);
    const out: [K, Stored][] = [];
    let count = batchSize;
    let first = true;
    for (;;) {
      const { block, offsets } = scratchLayout([
        tokenSize,
        tokenSize,
        count * keySize,
        count * this.valueBytes,
      ]);
      const [inOff = 0, outOff = 0, keysOff = 0, valuesOff = 0] = offsets;
      const { result, count: got } = mapBatch(cmd, {
        fd: this.fd,
        inBatch: first ? 0n : block.address + BigInt(inOff),
        outBatch: block.address + BigInt(outOff),
        keys: block.address + BigInt(keysOff),
        values: block.address + BigInt(valuesOff),
        count,
        elemFlags: 0,
      });
      if (result === -ENOSPC && got === 0) {
        // A hash bucket holds more elements than fit: retry the same position with more room.
        count *= 2;
        continue;
      }
      if (result < 0 && result !== -ENOENT) this.fail(-result, name);
      for (let i = 0; i < got; i++) {
        out.push([
          this.keyCodec.decode(block.buffer, keysOff + i * keySize),
          this.decodeValue(block.buffer, valuesOff + i * this.valueBytes),
        ]);
      }
      if (result === -ENOENT) return out;
      block.buffer.copy(block.buffer, inOff, outOff, outOff + tokenSize);
      first = false;
    }
  }

  /** Writes many elements with BPF_MAP_UPDATE_BATCH, `batchSize` per syscall. */
  updateBatch(entries: Iterable<readonly [K, Stored]>, mode: UpdateMode = 'any', batchSize = 4096): number {
    const keySize = this.info.keySize;
    let written = 0;
    inBatches(entries, batchSize, (pending) => {
      const { block, offsets } = scratchLayout([pending.length * keySize, pending.length * this.valueBytes]);
      const [keysOff = 0, valuesOff = 0] = offsets;
      pending.forEach(([key, value], i) => {
        this.keyCodec.encode(key, block.buffer, keysOff + i * keySize);
        this.encodeValue(value, block.buffer, valuesOff + i * this.valueBytes);
      });
      const { result, count } = mapBatch(BpfCommand.MAP_UPDATE_BATCH, {
        fd: this.fd,
        inBatch: 0n,
        outBatch: 0n,
        keys: block.address + BigInt(keysOff),
        values: block.address + BigInt(valuesOff),
        count: pending.length,
        elemFlags: updateModeFlag[mode],
      });
      if (result < 0) this.fail(-result, 'BPF_MAP_UPDATE_BATCH', `after ${written + count} elements`);
      written += count;
    });
    return written;
  }

  /** Deletes many keys with BPF_MAP_DELETE_BATCH; returns how many were deleted. */
  deleteBatch(keys: Iterable<K>, batchSize = 4096): number {
    const keySize = this.info.keySize;
    let deleted = 0;
    inBatches(keys, batchSize, (pending) => {
      const { block } = scratchLayout([pending.length * keySize]);
      pending.forEach((key, i) => this.keyCodec.encode(key, block.buffer, i * keySize));
      const { result, count } = mapBatch(BpfCommand.MAP_DELETE_BATCH, {
        fd: this.fd,
        inBatch: 0n,
        outBatch: 0n,
        keys: block.address,
        values: 0n,
        count: pending.length,
        elemFlags: 0,
      });
      // ENOENT: some key was absent; the kernel stops there, so delete the rest one by one.
      if (result === -ENOENT) {
        deleted += count;
        for (const key of pending.slice(count + 1)) if (this.delete(key)) deleted++;
      } else if (result < 0) this.fail(-result, 'BPF_MAP_DELETE_BATCH', `after ${deleted + count} elements`);
      else deleted += count;
    });
    return deleted;
  }
}

/** Hands `items` to `flush` in arrays of at most `size` (none empty). */
function inBatches<T>(items: Iterable<T>, size: number, flush: (batch: T[]) => void): void {
  let pending: T[] = [];
  for (const item of items) {
    pending.push(item);
    if (pending.length >= size) {
      flush(pending);
      pending = [];
    }
  }
  if (pending.length > 0) flush(pending);
}

export type PlainMapType = 'hash' | 'lru_hash' | 'array' | 'lpm_trie';

export interface MapSpec<K, V> {
  type: PlainMapType;
  /** Up to 15 characters; shows in bpftool and error messages. */
  name?: string;
  key: Codec<K>;
  value: Codec<V>;
  maxEntries: number;
  /** Extra BPF_F_* map flags; lpm_trie always gets BPF_F_NO_PREALLOC, which it requires. */
  flags?: number;
}

/** A map with one value per key: hash, LRU hash, array, LPM trie. */
export class BpfMap<K, V> extends KeyedMap<K, V, V> {
  static create<K, V>(spec: MapSpec<K, V>): BpfMap<K, V> {
    const flags = (spec.flags ?? 0) | (spec.type === 'lpm_trie' ? MapFlags.NO_PREALLOC : 0);
    const fd = createFd(spec.type, spec.name, spec.key.size, spec.value.size, spec.maxEntries, flags);
    return new BpfMap(fd, spec.key, spec.value);
  }

  /** Adopts an fd (the map takes ownership); codec sizes must match the map's. */
  static fromFd<K, V>(fd: number, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return new BpfMap(fd, key, value, adoptFd(fd, key.size, value.size, 'BpfMap.fromFd'));
  }

  static fromPin<K, V>(path: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return BpfMap.fromFd(openPinnedFd(path), key, value);
  }

  static fromId<K, V>(id: number, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return BpfMap.fromFd(getFdById(BpfCommand.MAP_GET_FD_BY_ID, id, `map id ${id}`), key, value);
  }

  protected storedValueBytes(): number {
    return this.info.valueSize;
  }

  protected encodeValue(value: V, target: Buffer, offset: number): void {
    this.valueCodec.encode(value, target, offset);
  }

  protected decodeValue(source: Buffer, offset: number): V {
    return this.valueCodec.decode(source, offset);
  }
}

export type PerCpuMapType = 'percpu_hash' | 'lru_percpu_hash' | 'percpu_array';

export interface PerCpuMapSpec<K, V> extends Omit<MapSpec<K, V>, 'type'> {
  type: PerCpuMapType;
}

/** Sums numbers, bigints, or objects of them field by field (per-CPU counters). */
export function sumValues<V>(values: readonly V[]): V {
  if (values.length === 0) throw new Error('nothing to sum');
  const [first] = values as [V, ...V[]];
  if (typeof first === 'number') return (values as readonly number[]).reduce((a, b) => a + b, 0) as V;
  if (typeof first === 'bigint') return (values as readonly bigint[]).reduce((a, b) => a + b, 0n) as V;
  if (typeof first === 'object' && first !== null && !Array.isArray(first) && !Buffer.isBuffer(first)) {
    const out: Record<string, unknown> = {};
    for (const field of Object.keys(first)) {
      out[field] = sumValues(values.map((v) => (v as Record<string, unknown>)[field]));
    }
    return out as V;
  }
  throw new Error(`cannot sum per-CPU values of type ${typeof first}; pass a reducer`);
}

/**
 * A per-CPU map: every key holds one value per possible CPU, so programs update without
 * contention and readers add the slots up (`lookupSum`).
 */
export class PerCpuMap<K, V> extends KeyedMap<K, V, V[]> {
  readonly cpus: number;
  private readonly slot: number;

  static create<K, V>(spec: PerCpuMapSpec<K, V>): PerCpuMap<K, V> {
    const fd = createFd(
      spec.type,
      spec.name,
      spec.key.size,
      spec.value.size,
      spec.maxEntries,
      spec.flags ?? 0,
    );
    return new PerCpuMap(fd, spec.key, spec.value);
  }

  static fromFd<K, V>(fd: number, key: Codec<K>, value: Codec<V>): PerCpuMap<K, V> {
    return new PerCpuMap(fd, key, value, adoptFd(fd, key.size, value.size, 'PerCpuMap.fromFd'));
  }

  static fromPin<K, V>(path: string, key: Codec<K>, value: Codec<V>): PerCpuMap<K, V> {
    return PerCpuMap.fromFd(openPinnedFd(path), key, value);
  }

  private constructor(fd: number, key: Codec<K>, value: Codec<V>, info?: MapInfo) {
    super(fd, key, value, info);
    this.cpus = possibleCpuCount();
    this.slot = alignUp(this.info.valueSize, 8);
  }

  /** The values of `key` summed over CPUs (or folded with `reduce`). */
  lookupSum(key: K, reduce: (values: V[]) => V = sumValues): V | undefined {
    const values = this.lookup(key);
    return values === undefined ? undefined : reduce(values);
  }

  /** Sets a key; a single value is written to every CPU's slot. */
  override update(key: K, value: V[] | V, mode: UpdateMode = 'any'): void {
    super.update(key, this.perCpu(value), mode);
  }

  private perCpu(value: V[] | V): V[] {
    if (Array.isArray(value) && value.length === this.cpus) return value as V[];
    return Array.from({ length: this.cpus }, () => value as V);
  }

  protected storedValueBytes(): number {
    // Each CPU's slot is rounded up to 8 bytes (bpf_map_value_size in the kernel).
    return alignUp(this.info.valueSize, 8) * possibleCpuCount();
  }

  protected encodeValue(values: V[], target: Buffer, offset: number): void {
    if (values.length !== this.cpus)
      throw new RangeError(`expected ${this.cpus} per-CPU values, got ${values.length}`);
    values.forEach((v, cpu) => {
      target.fill(0, offset + cpu * this.slot, offset + (cpu + 1) * this.slot);
      this.valueCodec.encode(v, target, offset + cpu * this.slot);
    });
  }

  protected decodeValue(source: Buffer, offset: number): V[] {
    return Array.from({ length: this.cpus }, (_, cpu) =>
      this.valueCodec.decode(source, offset + cpu * this.slot),
    );
  }
}

export interface MapOfMapsSpec<K> {
  type: 'array_of_maps' | 'hash_of_maps';
  name?: string;
  key: Codec<K>;
  maxEntries: number;
  /** A map with the shape every inner map must have (type, key/value size, max_entries). */
  innerTemplate: MapBase;
  flags?: number;
}

/**
 * Maps whose values are maps. Replacing an inner map is one atomic update: programs see either
 * the old or the new map, never a half-built one, which is how policy is swapped in.
 */
export class MapOfMaps<K> extends MapBase {
  private readonly ids: BpfMap<K, number>;

  static create<K>(spec: MapOfMapsSpec<K>): MapOfMaps<K> {
    if (spec.type === 'array_of_maps' && spec.key.size !== 4)
      throw new Error('array_of_maps needs a 4-byte (u32) key');
    const fd = createFd(
      spec.type,
      spec.name,
      spec.key.size,
      4,
      spec.maxEntries,
      spec.flags ?? 0,
      spec.innerTemplate.fd,
    );
    return new MapOfMaps(fd, spec.key);
  }

  static fromPin<K>(path: string, key: Codec<K>): MapOfMaps<K> {
    return new MapOfMaps(openPinnedFd(path), key);
  }

  private constructor(fd: number, key: Codec<K>) {
    super(fd);
    if (this.info.typeName !== 'array_of_maps' && this.info.typeName !== 'hash_of_maps') {
      const type = this.info.typeName;
      closeFd(fd);
      throw new Error(`expected a map of maps, got ${type}`);
    }
    // Updates take an inner map fd, lookups return the inner map id: both u32.
    this.ids = new InnerView(fd, key, this.info);
  }

  /** Points `key` at `inner`, atomically replacing whatever was there. */
  set(key: K, inner: MapBase, mode: UpdateMode = 'any'): void {
    this.ids.update(key, inner.fd, mode);
  }

  /**
   * Points every key at its inner map in one BPF_MAP_UPDATE_BATCH: each element is replaced
   * atomically as with set(), and the kernel waits for running programs (an RCU grace period,
   * milliseconds) once per batch instead of once per element.
   */
  setMany(entries: readonly (readonly [K, MapBase])[]): void {
    this.ids.updateBatch(entries.map(([k, inner]) => [k, inner.fd] as const));
  }

  /** The kernel id of the inner map at `key`. */
  innerId(key: K): number | undefined {
    return this.ids.lookup(key);
  }

  /** Opens the inner map at `key` with codecs for its keys and values. */
  openInner<IK, IV>(key: K, innerKey: Codec<IK>, innerValue: Codec<IV>): BpfMap<IK, IV> | undefined {
    const id = this.innerId(key);
    return id === undefined ? undefined : BpfMap.fromId(id, innerKey, innerValue);
  }

  delete(key: K): boolean {
    return this.ids.delete(key);
  }

  keys(): Generator<K> {
    return this.ids.keys();
  }
}

/** Shares the outer map's fd without owning it (MapOfMaps closes it). */
class InnerView<K> extends BpfMap<K, number> {
  constructor(fd: number, key: Codec<K>, info: MapInfo) {
    super(fd, key, u32, info);
  }

  override close(): void {
    // The owning MapOfMaps closes the fd.
  }
}

/** A BPF ring buffer map; read it with RingBufReader. */
export class RingBufMap extends MapBase {
  /** `size` in bytes: a power of two and a multiple of the page size (4096). */
  static create(spec: { name?: string; size: number }): RingBufMap {
    const { size } = spec;
    if (!Number.isInteger(size) || size < 4096 || (size & (size - 1)) !== 0)
      throw new RangeError(`ring buffer size ${size} must be a power of two of at least 4096 bytes`);
    return new RingBufMap(createFd('ringbuf', spec.name, 0, 0, size, 0));
  }

  static fromPin(path: string): RingBufMap {
    return new RingBufMap(openPinnedFd(path));
  }

  static fromFd(fd: number): RingBufMap {
    return new RingBufMap(fd);
  }

  private constructor(fd: number) {
    super(fd);
    if (this.info.typeName !== 'ringbuf') {
      const type = this.info.typeName;
      closeFd(fd);
      throw new Error(`expected a ringbuf map, got ${type}`);
    }
  }

  /** Data area size in bytes. */
  get size(): number {
    return this.info.maxEntries;
  }
}

/** Any map a program can reference by name. */
export type AnyMap = MapBase;
