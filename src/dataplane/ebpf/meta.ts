/**
 * What a node's dataplane was built with — set indices, counter slots, which program runs on
 * which hook — kept in the kernel next to the objects it describes: a pinned array map holding
 * compressed JSON. A restarted agent, `lab counters` or `lab conntrack` read it from there; it
 * goes away with the pins, so nothing else on disk can go stale. Replaced by pinning a new map
 * and renaming it over the old one, so readers see the old or the new description, never half.
 */
import { renameSync, rmSync } from 'node:fs';
import { constants as zlibConstants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { BpfMap, codecs, isPinned, type MapBase } from '../../bpf/index.js';
import type { Direction } from '../../ir/types.js';
import type { Allocation } from './node.js';
import type { TableFallback, TableState } from './tables.js';
import { metaPin } from './paths.js';
import type { FabricXdpState } from './nodeport-xdp.js';

export const META_VERSION = 1;

export interface HookState {
  endpoint: string;
  direction: Direction;
  ifname: string;
  ifindex: number;
  /** programHash of the attached code. */
  hash: string;
  programName: string;
}

export interface PrefilterState {
  hash: string;
  lists: { name: string; index: number }[];
  interfaces: { ifname: string; ifindex: number }[];
  /** The trie's max entries. */
  capacity: number;
}

export interface NodeMeta {
  version: typeof META_VERSION;
  scope: string;
  node: string;
  alloc: Allocation;
  /** Size of the counter array. */
  counterSlots: number;
  hooks: HookState[];
  prefilter?: PrefilterState;
  /** The fabric's XDP program (prefilter, node ports): nodeport-xdp.ts. */
  xdp?: FabricXdpState;
  /** Table mode: the decision table installed for each hook decided by one. */
  tables?: TableState[];
  /** Rule sets that carry a table but walk their rules on this node (capacity), and why. */
  tableFallbacks?: TableFallback[];
  /** Map ids the programs were loaded against. */
  mapIds: Record<string, number>;
  appliedAt: string;
}

const CHUNK = 4096;
const MAGIC = 0x53594d31; // 'SYM1'
const chunk = codecs.bytes(CHUNK);

export function readMeta(dir: string): NodeMeta | undefined {
  const path = metaPin(dir);
  if (!isPinned(path)) return undefined;
  const map = BpfMap.fromPin(path, codecs.u32, chunk);
  try {
    const parts: Buffer[] = [];
    for (let i = 0; i < map.info.maxEntries; i++) parts.push(map.lookup(i) ?? Buffer.alloc(CHUNK));
    const all = Buffer.concat(parts);
    if (all.readUInt32LE(0) !== MAGIC) return undefined;
    const length = all.readUInt32LE(4);
    const meta = JSON.parse(inflateRawSync(all.subarray(8, 8 + length)).toString('utf8')) as NodeMeta;
    return meta.version === META_VERSION ? meta : undefined;
  } finally {
    map.close();
  }
}

export function writeMeta(dir: string, meta: NodeMeta): void {
  // The fastest level: a node's description (its counter slots) is ~170 kB of JSON at 10k
  // endpoints, which the default level takes ~12 ms to pack on every apply that changes it, and
  // this level ~2 ms, for 15% more chunks.
  const data = deflateRawSync(Buffer.from(JSON.stringify(meta)), { level: zlibConstants.Z_BEST_SPEED });
  const header = Buffer.alloc(8);
  header.writeUInt32LE(MAGIC, 0);
  header.writeUInt32LE(data.length, 4);
  const all = Buffer.concat([header, data]);
  const count = Math.ceil(all.length / CHUNK);
  const map = BpfMap.create({
    type: 'array',
    name: 'sy_meta',
    key: codecs.u32,
    value: chunk,
    maxEntries: count,
  });
  try {
    map.updateBatch(
      Array.from({ length: count }, (_, i) => [i, all.subarray(i * CHUNK, (i + 1) * CHUNK)] as const),
    );
    pinReplacing(map, metaPin(dir));
  } finally {
    map.close();
  }
}

/** Pins `map` at `path`, replacing what was there in one rename: readers see the old or the new. */
export function pinReplacing(map: MapBase, path: string): void {
  const next = `${path}-next`;
  rmSync(next, { force: true });
  map.pin(next);
  renameSync(next, path);
}
