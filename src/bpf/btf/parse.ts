/**
 * BTF blob reader. One pass records where each type record starts (and which kind it is);
 * records are decoded on demand and names looked up by comparing bytes in the string table, so
 * reading the kernel's 5 MB vmlinux BTF costs one linear scan and no per-type objects.
 */
import { BTF_KIND_NAMES, BTF_KINDS, type BtfKind, type BtfType, type NamedKind } from './types.js';

const BTF_MAGIC = 0xeb9f;
const HEADER_MIN = 24;

/** Thrown for malformed BTF and for lookups that find nothing; the message names the object. */
export class BtfError extends Error {
  override name = 'BtfError';
}

const latin1 = new TextDecoder('latin1');

/** Parsed BTF: the kernel's, a module's (split, on top of a base) or one we built. */
export class Btf {
  /** First type id in this blob (1 for base BTF, base.typeCount for split BTF). */
  readonly firstId: number;
  /** Ids below this are valid (includes the base's). */
  readonly typeCount: number;
  readonly base: Btf | undefined;
  private readonly view: DataView;
  private readonly strings: Uint8Array;
  private readonly stringBase: number;
  /** Byte offset of each of this blob's type records inside `view` (index = id - firstId). */
  private readonly offsets: Uint32Array;
  private readonly kinds: Uint8Array;
  private readonly decoded = new Map<number, BtfType>();
  private readonly byName = new Map<string, number[]>();

  constructor(blob: Uint8Array, base?: Btf) {
    if (blob.byteLength < HEADER_MIN)
      throw new BtfError(`BTF blob of ${blob.byteLength} bytes is shorter than its header`);
    const head = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const magic = head.getUint16(0, true);
    if (magic !== BTF_MAGIC) {
      throw new BtfError(
        magic === 0x9feb
          ? 'BTF blob is big-endian; only little-endian is supported'
          : `not BTF: magic 0x${magic.toString(16)}`,
      );
    }
    const hdrLen = head.getUint32(4, true);
    const typeOff = head.getUint32(8, true);
    const typeLen = head.getUint32(12, true);
    const strOff = head.getUint32(16, true);
    const strLen = head.getUint32(20, true);
    if (hdrLen + typeOff + typeLen > blob.byteLength || hdrLen + strOff + strLen > blob.byteLength) {
      throw new BtfError(`BTF header says sections end past the blob's ${blob.byteLength} bytes`);
    }
    this.base = base;
    this.firstId = base ? base.typeCount : 1;
    this.stringBase = base ? base.stringEnd : 0;
    this.view = new DataView(blob.buffer, blob.byteOffset + hdrLen + typeOff, typeLen);
    this.strings = blob.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    const { offsets, kinds } = scanTypes(this.view);
    this.offsets = offsets;
    this.kinds = kinds;
    this.typeCount = this.firstId + offsets.length;
  }

  /** End of the string section in the combined (base + split) string numbering. */
  get stringEnd(): number {
    return this.stringBase + this.strings.byteLength;
  }

  /** The string at `offset` in the combined string numbering. */
  string(offset: number): string {
    if (offset < this.stringBase) return this.base!.string(offset);
    const start = offset - this.stringBase;
    if (start >= this.strings.byteLength)
      throw new BtfError(`BTF string offset ${offset} is past the string section`);
    let end = start;
    while (end < this.strings.byteLength && this.strings[end] !== 0) end++;
    return latin1.decode(this.strings.subarray(start, end));
  }

  kindOf(id: number): BtfKind | 'void' {
    if (id === 0) return 'void';
    if (id < this.firstId) return this.base!.kindOf(id);
    const kind = BTF_KIND_NAMES[this.kinds[id - this.firstId] ?? 0];
    if (!kind) throw new BtfError(`BTF type id ${id} does not exist (${this.typeCount} types)`);
    return kind;
  }

  /** The decoded record of type `id` (cached). */
  type(id: number): BtfType {
    if (id === 0) return { kind: 'void', id: 0, name: 'void' };
    if (id < this.firstId) return this.base!.type(id);
    let type = this.decoded.get(id);
    if (!type) {
      const offset = this.offsets[id - this.firstId];
      if (offset === undefined)
        throw new BtfError(`BTF type id ${id} does not exist (${this.typeCount} types)`);
      type = decodeType(this, this.view, offset, id);
      this.decoded.set(id, type);
    }
    return type;
  }

  /** Ids of every type of `kind` named `name`, base first. */
  idsByName(kind: NamedKind, name: string): number[] {
    const key = `${kind}:${name}`;
    let ids = this.byName.get(key);
    if (!ids) {
      ids = [...(this.base?.idsByName(kind, name) ?? []), ...this.scanByName(BTF_KINDS[kind], name)];
      this.byName.set(key, ids);
    }
    return ids;
  }

  /** Compares the name bytes in place: no string is built for the types that do not match. */
  private scanByName(kindNumber: number, name: string): number[] {
    const wanted = Buffer.from(name, 'latin1');
    const found: number[] = [];
    const strings = this.strings;
    for (let i = 0; i < this.offsets.length; i++) {
      if (this.kinds[i] !== kindNumber) continue;
      const nameOff = this.view.getUint32(this.offsets[i]!, true) - this.stringBase;
      if (nameOff < 0) {
        // A split blob naming a type with a base string: rare, compare the decoded string.
        if (this.string(nameOff + this.stringBase) === name) found.push(this.firstId + i);
        continue;
      }
      if (strings[nameOff + wanted.length] !== 0) continue;
      let same = true;
      for (let j = 0; j < wanted.length; j++) {
        if (strings[nameOff + j] !== wanted[j]) {
          same = false;
          break;
        }
      }
      if (same) found.push(this.firstId + i);
    }
    return found;
  }
}

/** Bytes of kind-specific data after the 12-byte common header. */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case BTF_KINDS.int:
    case BTF_KINDS.var:
    case BTF_KINDS.decl_tag:
      return 4;
    case BTF_KINDS.array:
      return 12;
    case BTF_KINDS.struct:
    case BTF_KINDS.union:
    case BTF_KINDS.datasec:
    case BTF_KINDS.enum64:
      return 12 * vlen;
    case BTF_KINDS.enum:
    case BTF_KINDS.func_proto:
      return 8 * vlen;
    default:
      return 0;
  }
}

function scanTypes(view: DataView): { offsets: Uint32Array; kinds: Uint8Array } {
  // Over-allocate (the smallest record is 12 bytes) and trim: avoids growing arrays.
  const capacity = Math.floor(view.byteLength / 12);
  const offsets = new Uint32Array(capacity);
  const kinds = new Uint8Array(capacity);
  let count = 0;
  let pos = 0;
  while (pos < view.byteLength) {
    if (pos + 12 > view.byteLength) throw new BtfError(`BTF type section truncated at byte ${pos}`);
    const info = view.getUint32(pos + 4, true);
    const kind = (info >>> 24) & 0x1f;
    if (!BTF_KIND_NAMES[kind])
      throw new BtfError(`BTF type ${count + 1} at byte ${pos} has unknown kind ${kind}`);
    offsets[count] = pos;
    kinds[count] = kind;
    count++;
    pos += 12 + extraBytes(kind, info & 0xffff);
  }
  if (pos !== view.byteLength) throw new BtfError(`BTF type section: last record runs past its end`);
  return { offsets: offsets.slice(0, count), kinds: kinds.slice(0, count) };
}

function decodeType(btf: Btf, view: DataView, pos: number, id: number): BtfType {
  const name = btf.string(view.getUint32(pos, true));
  const info = view.getUint32(pos + 4, true);
  const sizeOrType = view.getUint32(pos + 8, true);
  const vlen = info & 0xffff;
  const kindFlag = info >>> 31 === 1;
  const kind = BTF_KIND_NAMES[(info >>> 24) & 0x1f]!;
  const data = pos + 12;
  const u32 = (at: number): number => view.getUint32(at, true);
  switch (kind) {
    case 'int': {
      const enc = u32(data);
      const encoding = (enc >>> 24) & 0xf;
      return {
        kind,
        id,
        name,
        size: sizeOrType,
        bits: enc & 0xff,
        bitOffset: (enc >>> 16) & 0xff,
        signed: (encoding & 1) !== 0,
        char: (encoding & 2) !== 0,
        bool: (encoding & 4) !== 0,
      };
    }
    case 'ptr':
      return { kind, id, name, target: sizeOrType };
    case 'array':
      return { kind, id, name, elem: u32(data), index: u32(data + 4), length: u32(data + 8) };
    case 'struct':
    case 'union': {
      const members = [];
      for (let i = 0; i < vlen; i++) {
        const at = data + 12 * i;
        const offset = u32(at + 8);
        members.push({
          name: btf.string(u32(at)),
          type: u32(at + 4),
          bitOffset: kindFlag ? offset & 0xffffff : offset,
          bitSize: kindFlag ? offset >>> 24 : 0,
        });
      }
      return { kind, id, name, size: sizeOrType, members };
    }
    case 'enum': {
      const values = [];
      for (let i = 0; i < vlen; i++) {
        const at = data + 8 * i;
        const raw = kindFlag ? view.getInt32(at + 4, true) : u32(at + 4);
        values.push({ name: btf.string(u32(at)), value: BigInt(raw) });
      }
      return { kind, id, name, size: sizeOrType, signed: kindFlag, values };
    }
    case 'enum64': {
      const values = [];
      for (let i = 0; i < vlen; i++) {
        const at = data + 12 * i;
        const unsigned = (BigInt(u32(at + 8)) << 32n) | BigInt(u32(at + 4));
        values.push({ name: btf.string(u32(at)), value: kindFlag ? BigInt.asIntN(64, unsigned) : unsigned });
      }
      return { kind, id, name, size: sizeOrType, signed: kindFlag, values };
    }
    case 'fwd':
      return { kind, id, name, union: kindFlag };
    case 'typedef':
    case 'volatile':
    case 'const':
    case 'restrict':
    case 'type_tag':
      return { kind, id, name, target: sizeOrType };
    case 'func':
      return { kind, id, name, proto: sizeOrType, linkage: vlen };
    case 'func_proto': {
      const params = [];
      for (let i = 0; i < vlen; i++)
        params.push({ name: btf.string(u32(data + 8 * i)), type: u32(data + 8 * i + 4) });
      return { kind, id, name, returns: sizeOrType, params };
    }
    case 'var':
      return { kind, id, name, type: sizeOrType, linkage: u32(data) };
    case 'datasec': {
      const vars = [];
      for (let i = 0; i < vlen; i++) {
        const at = data + 12 * i;
        vars.push({ type: u32(at), offset: u32(at + 4), size: u32(at + 8) });
      }
      return { kind, id, name, size: sizeOrType, vars };
    }
    case 'float':
      return { kind, id, name, size: sizeOrType };
    case 'decl_tag':
      return { kind, id, name, type: sizeOrType, componentIdx: view.getInt32(data, true) };
  }
}
