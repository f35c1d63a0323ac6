/**
 * Reading a whole map's contents cheaply, for drift checks: a raw walk that hands every key and
 * value to a visitor without decoding, and the kernel's own element count where it keeps one.
 * LPM tries have no batch lookup, so the walk is BPF_MAP_GET_NEXT_KEY + BPF_MAP_LOOKUP_ELEM per
 * element; keys alternate between two scratch slots so nothing is copied or allocated per step.
 */
import { readFileSync } from 'node:fs';
import { alignUp } from './codecs.js';
import { BpfCommand } from './constants.js';
import { getFdById, mapGetNextKey, mapLookupElem } from './commands.js';
import { bpfError } from './errors.js';
import { readMapInfo, type MapInfo } from './maps.js';
import { openPinnedFd } from './pins.js';
import { closeFd, scratch } from './sys.js';

const ENOENT = 2;

/**
 * Calls `visit` with every key and value of the map (views into scratch memory, valid only during
 * the call). Keys deleted during the walk are skipped. Plain (not per-CPU) maps only: a per-CPU
 * value is wider than value_size. Returns how many elements were visited.
 */
export function walkMapRaw(fd: number, info: MapInfo, visit: (key: Buffer, value: Buffer) => void): number {
  const keySlot = alignUp(Math.max(info.keySize, 1), 8);
  const valueOffset = 2 * keySlot;
  const block = scratch.reserve(valueOffset + alignUp(Math.max(info.valueSize, 1), 8));
  const { buffer, address } = block;
  let current = -1;
  let visited = 0;
  for (;;) {
    const next = current === 0 ? 1 : 0;
    const result = mapGetNextKey(
      fd,
      current < 0 ? 0n : address + BigInt(current * keySlot),
      address + BigInt(next * keySlot),
    );
    if (result === -ENOENT) return visited;
    if (result < 0)
      throw bpfError(-result, { operation: 'BPF_MAP_GET_NEXT_KEY', subject: `map '${info.name}'` });
    current = next;
    const found = mapLookupElem(fd, address + BigInt(current * keySlot), address + BigInt(valueOffset));
    if (found === -ENOENT) continue;
    if (found < 0)
      throw bpfError(-found, { operation: 'BPF_MAP_LOOKUP_ELEM', subject: `map '${info.name}'` });
    visit(
      buffer.subarray(current * keySlot, current * keySlot + info.keySize),
      buffer.subarray(valueOffset, valueOffset + info.valueSize),
    );
    visited++;
  }
}

/**
 * The `memlock` the kernel reports for the map in /proc/self/fdinfo: for LPM tries and maps
 * allocated on demand (BPF_F_NO_PREALLOC hashes) it is proportional to the number of elements,
 * so it changes with every insert or delete, at the cost of one small file read.
 */
export function mapMemlock(fd: number): bigint {
  const text = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const match = /^memlock:\s+(\d+)$/m.exec(text);
  return match?.[1] !== undefined ? BigInt(match[1]) : -1n;
}

/** An fd of a pinned map, or of a map by kernel id, with its info; close it with closeFd. */
export interface OpenedMap {
  fd: number;
  info: MapInfo;
}

function opened(fd: number): OpenedMap {
  try {
    return { fd, info: readMapInfo(fd) };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

export function openMapPin(path: string): OpenedMap {
  return opened(openPinnedFd(path));
}

export function openMapId(id: number): OpenedMap {
  return opened(getFdById(BpfCommand.MAP_GET_FD_BY_ID, id, `map id ${id}`));
}
