import {
  ATTR_SIZE,
  GetIdAttr,
  InfoAttr,
  LinkCreateAttr,
  LinkDetachAttr,
  LinkUpdateAttr,
  MapBatchAttr,
  MapCreateAttr,
  MapElemAttr,
  ObjAttr,
  ProgQueryAttr,
  syncAttr,
  type Attr,
} from './attr.js';
import { BpfCommand, bpfCommandNames, checkObjectName, OBJ_NAME_LEN } from './constants.js';
import { bpfError, type ErrorContext } from './errors.js';
import { alignUp } from './codecs.js';
import { rawBpf, scratch, type NativeBlock } from './sys.js';

/**
 * One function per bpf(2) command, taking native addresses and returning plain numbers. Typed
 * objects (maps, programs, links) build on these; nothing here knows about codecs.
 */

export function commandName(cmd: number): string {
  return bpfCommandNames[cmd] ?? `bpf cmd ${cmd}`;
}

/** Runs a command; returns the result or -errno. */
export function tryBpf(cmd: number, attr: Attr = syncAttr): number {
  return rawBpf(cmd, attr.block, ATTR_SIZE);
}

/** Runs a command and throws a typed BpfError on failure. */
export function bpf(cmd: number, attr: Attr = syncAttr, subject?: string): number {
  const result = tryBpf(cmd, attr);
  if (result < 0) throw bpfError(-result, context(cmd, subject));
  return result;
}

export function context(cmd: number, subject?: string): ErrorContext {
  return subject === undefined ? { operation: commandName(cmd) } : { operation: commandName(cmd), subject };
}

/** Lays several regions out in the shared scratch block, 8-byte aligned; returns their offsets. */
export function scratchLayout(sizes: readonly number[]): { block: NativeBlock; offsets: number[] } {
  const offsets: number[] = [];
  let end = 0;
  for (const size of sizes) {
    offsets.push(end);
    end = alignUp(end + Math.max(size, 1), 8);
  }
  return { block: scratch.reserve(end), offsets };
}

/** Writes a NUL-terminated path into scratch and returns its address. */
function scratchString(value: string): bigint {
  const bytes = Buffer.from(`${value}\0`, 'utf8');
  const { block } = scratchLayout([bytes.length]);
  bytes.copy(block.buffer, 0);
  return block.address;
}

export interface MapCreateParams {
  mapType: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  innerMapFd?: number;
  name?: string;
}

export function mapCreate(params: MapCreateParams, subject?: string): number {
  const attr = syncAttr.reset();
  attr
    .u32(MapCreateAttr.mapType, params.mapType)
    .u32(MapCreateAttr.keySize, params.keySize)
    .u32(MapCreateAttr.valueSize, params.valueSize)
    .u32(MapCreateAttr.maxEntries, params.maxEntries)
    .u32(MapCreateAttr.mapFlags, params.flags)
    .u32(MapCreateAttr.innerMapFd, params.innerMapFd ?? 0);
  if (params.name) attr.name(MapCreateAttr.mapName, checkObjectName(params.name, 'map'), OBJ_NAME_LEN);
  return bpf(BpfCommand.MAP_CREATE, attr, subject);
}

function elemAttr(fd: number, key: bigint, value: bigint, flags: number): Attr {
  return syncAttr
    .reset()
    .u32(MapElemAttr.mapFd, fd)
    .u64(MapElemAttr.key, key)
    .u64(MapElemAttr.value, value)
    .u64(MapElemAttr.flags, flags);
}

/** 0 on success or -errno (-ENOENT when the key is absent). */
export function mapLookupElem(fd: number, key: bigint, value: bigint, flags = 0): number {
  return tryBpf(BpfCommand.MAP_LOOKUP_ELEM, elemAttr(fd, key, value, flags));
}

export function mapUpdateElem(fd: number, key: bigint, value: bigint, flags: number): number {
  return tryBpf(BpfCommand.MAP_UPDATE_ELEM, elemAttr(fd, key, value, flags));
}

export function mapDeleteElem(fd: number, key: bigint): number {
  return tryBpf(BpfCommand.MAP_DELETE_ELEM, elemAttr(fd, key, 0n, 0));
}

/** key 0n asks for the first key. */
export function mapGetNextKey(fd: number, key: bigint, nextKey: bigint): number {
  return tryBpf(BpfCommand.MAP_GET_NEXT_KEY, elemAttr(fd, key, nextKey, 0));
}

export interface BatchParams {
  fd: number;
  inBatch: bigint;
  outBatch: bigint;
  keys: bigint;
  values: bigint;
  count: number;
  elemFlags: number;
}

/** Runs a batch command; returns the errno-or-zero and how many elements the kernel processed. */
export function mapBatch(cmd: number, params: BatchParams): { result: number; count: number } {
  const attr = syncAttr
    .reset()
    .u64(MapBatchAttr.inBatch, params.inBatch)
    .u64(MapBatchAttr.outBatch, params.outBatch)
    .u64(MapBatchAttr.keys, params.keys)
    .u64(MapBatchAttr.values, params.values)
    .u32(MapBatchAttr.count, params.count)
    .u32(MapBatchAttr.mapFd, params.fd)
    .u64(MapBatchAttr.elemFlags, params.elemFlags)
    .u64(MapBatchAttr.flags, 0);
  const result = tryBpf(cmd, attr);
  return { result: Math.min(result, 0), count: attr.readU32(MapBatchAttr.count) };
}

export function objPin(fd: number, path: string, subject?: string): void {
  const address = scratchString(path);
  bpf(
    BpfCommand.OBJ_PIN,
    syncAttr.reset().u64(ObjAttr.pathname, address).u32(ObjAttr.bpfFd, fd),
    subject ?? `'${path}'`,
  );
}

export function objGet(path: string, fileFlags = 0): number {
  const address = scratchString(path);
  return bpf(
    BpfCommand.OBJ_GET,
    syncAttr.reset().u64(ObjAttr.pathname, address).u32(ObjAttr.fileFlags, fileFlags),
    `'${path}'`,
  );
}

/** BPF_OBJ_GET_INFO_BY_FD into a zeroed buffer of `size` bytes; returns a copy. */
export function objInfo(fd: number, size: number, subject?: string): Buffer {
  const { block } = scratchLayout([size]);
  block.buffer.fill(0, 0, size);
  const attr = syncAttr
    .reset()
    .u32(InfoAttr.bpfFd, fd)
    .u32(InfoAttr.infoLen, size)
    .u64(InfoAttr.info, block.address);
  bpf(BpfCommand.OBJ_GET_INFO_BY_FD, attr, subject);
  return Buffer.from(block.buffer.subarray(0, size));
}

export function getFdById(cmd: number, id: number, subject?: string): number {
  return bpf(cmd, syncAttr.reset().u32(GetIdAttr.id, id), subject);
}

export interface LinkCreateParams {
  progFd: number;
  /** An fd (cgroup, perf event) or an ifindex (XDP, tcx). */
  target: number;
  attachType: number;
  flags: number;
  /** tcx/cgroup ordering: relative_fd or relative_id. */
  relative?: number;
  expectedRevision?: bigint;
}

export function linkCreate(params: LinkCreateParams, subject?: string): number {
  const attr = syncAttr
    .reset()
    .u32(LinkCreateAttr.progFd, params.progFd)
    .u32(LinkCreateAttr.targetFd, params.target)
    .u32(LinkCreateAttr.attachType, params.attachType)
    .u32(LinkCreateAttr.flags, params.flags);
  if (params.relative !== undefined) attr.u32(LinkCreateAttr.relative, params.relative);
  if (params.expectedRevision !== undefined)
    attr.u64(LinkCreateAttr.expectedRevision, params.expectedRevision);
  return bpf(BpfCommand.LINK_CREATE, attr, subject);
}

export function linkUpdate(
  linkFd: number,
  newProgFd: number,
  oldProgFd: number | undefined,
  subject?: string,
): void {
  const attr = syncAttr.reset().u32(LinkUpdateAttr.linkFd, linkFd).u32(LinkUpdateAttr.newProgFd, newProgFd);
  // BPF_F_REPLACE makes the swap conditional on the old program still being attached.
  if (oldProgFd !== undefined)
    attr.u32(LinkUpdateAttr.flags, 1 << 2).u32(LinkUpdateAttr.oldProgFd, oldProgFd);
  bpf(BpfCommand.LINK_UPDATE, attr, subject);
}

export function linkDetach(linkFd: number, subject?: string): void {
  bpf(BpfCommand.LINK_DETACH, syncAttr.reset().u32(LinkDetachAttr.linkFd, linkFd), subject);
}

export interface ProgQueryResult {
  programIds: number[];
  linkIds: number[];
  revision: bigint;
}

/** BPF_PROG_QUERY for an ifindex (tcx) or cgroup fd: attached programs in run order. */
export function progQuery(
  target: number,
  attachType: number,
  maxPrograms = 64,
  subject?: string,
): ProgQueryResult {
  const { block, offsets } = scratchLayout([maxPrograms * 4, maxPrograms * 4]);
  const [progOffset = 0, linkOffset = 0] = offsets;
  const attr = syncAttr
    .reset()
    .u32(ProgQueryAttr.targetFd, target)
    .u32(ProgQueryAttr.attachType, attachType)
    .u64(ProgQueryAttr.progIds, block.address + BigInt(progOffset))
    .u32(ProgQueryAttr.count, maxPrograms)
    .u64(ProgQueryAttr.linkIds, block.address + BigInt(linkOffset))
    .u64(ProgQueryAttr.revision, 0);
  bpf(BpfCommand.PROG_QUERY, attr, subject);
  const count = attr.readU32(ProgQueryAttr.count);
  const read = (offset: number): number[] =>
    Array.from({ length: Math.min(count, maxPrograms) }, (_, i) => block.buffer.readUInt32LE(offset + i * 4));
  return {
    programIds: read(progOffset),
    linkIds: read(linkOffset),
    revision: attr.readU64(ProgQueryAttr.revision),
  };
}
