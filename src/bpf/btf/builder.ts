/**
 * Writes BTF blobs: the program BTF we load next to our programs (so func_info/line_info can
 * name our functions), and hand-made blobs for tests. Records follow include/uapi/linux/btf.h.
 */
import { BTF_KINDS, type BtfKind } from './types.js';

interface Record {
  words: number[];
}

export interface BuilderMember {
  name: string;
  type: number;
  /** Offset in bits from the start of the struct. */
  bitOffset: number;
  /** Bitfield width; 0 or absent for ordinary members. */
  bitSize?: number;
}

export class BtfBuilder {
  private readonly records: Record[] = [];
  private readonly stringBytes: number[] = [0];
  private readonly stringOffsets = new Map<string, number>([['', 0]]);
  private readonly firstId: number;
  private readonly stringBase: number;

  /** With a base, writes split BTF: ids and string offsets continue the base's. */
  constructor(base?: { typeCount: number; stringEnd: number }) {
    this.firstId = base?.typeCount ?? 1;
    this.stringBase = base?.stringEnd ?? 0;
  }

  /** Offset of `text` in the string section (deduplicated). */
  string(text: string): number {
    let offset = this.stringOffsets.get(text);
    if (offset === undefined) {
      offset = this.stringBase + this.stringBytes.length;
      for (const byte of Buffer.from(text, 'latin1')) this.stringBytes.push(byte);
      this.stringBytes.push(0);
      this.stringOffsets.set(text, offset);
    }
    return offset;
  }

  private add(
    name: string,
    kind: BtfKind,
    vlen: number,
    sizeOrType: number,
    extra: number[] = [],
    kindFlag = false,
  ): number {
    const info = ((kindFlag ? 1 : 0) << 31) | (BTF_KINDS[kind] << 24) | (vlen & 0xffff);
    this.records.push({
      words: [this.string(name), info >>> 0, sizeOrType >>> 0, ...extra.map((w) => w >>> 0)],
    });
    return this.firstId + this.records.length - 1;
  }

  int(
    name: string,
    size: number,
    options: { signed?: boolean; bool?: boolean; char?: boolean; bits?: number } = {},
  ): number {
    const encoding = (options.signed ? 1 : 0) | (options.char ? 2 : 0) | (options.bool ? 4 : 0);
    return this.add(name, 'int', 0, size, [(encoding << 24) | (options.bits ?? size * 8)]);
  }

  ptr(target: number): number {
    return this.add('', 'ptr', 0, target);
  }

  array(elem: number, index: number, length: number): number {
    return this.add('', 'array', 0, 0, [elem, index, length]);
  }

  struct(name: string, size: number, members: BuilderMember[], kind: 'struct' | 'union' = 'struct'): number {
    const bitfields = members.some((m) => (m.bitSize ?? 0) > 0);
    const extra = members.flatMap((m) => [
      this.string(m.name),
      m.type,
      bitfields ? ((m.bitSize ?? 0) << 24) | m.bitOffset : m.bitOffset,
    ]);
    return this.add(name, kind, members.length, size, extra, bitfields);
  }

  enum(name: string, size: number, values: [string, number][], signed = false): number {
    return this.add(
      name,
      'enum',
      values.length,
      size,
      values.flatMap(([n, v]) => [this.string(n), v]),
      signed,
    );
  }

  enum64(name: string, values: [string, bigint][], signed = false): number {
    const extra = values.flatMap(([n, v]) => {
      const u = BigInt.asUintN(64, v);
      return [this.string(n), Number(u & 0xffffffffn), Number(u >> 32n)];
    });
    return this.add(name, 'enum64', values.length, 8, extra, signed);
  }

  typedef(name: string, target: number): number {
    return this.add(name, 'typedef', 0, target);
  }

  qualifier(kind: 'const' | 'volatile' | 'restrict', target: number): number {
    return this.add('', kind, 0, target);
  }

  funcProto(returns: number, params: { name: string; type: number }[]): number {
    return this.add(
      '',
      'func_proto',
      params.length,
      returns,
      params.flatMap((p) => [this.string(p.name), p.type]),
    );
  }

  /** linkage: 0 static, 1 global. The verifier wants global for the program's main function. */
  func(name: string, proto: number, linkage = 1): number {
    return this.add(name, 'func', linkage, proto);
  }

  build(): Uint8Array {
    const typeLen = this.records.reduce((n, r) => n + r.words.length * 4, 0);
    const strLen = this.stringBytes.length;
    const out = new Uint8Array(24 + typeLen + strLen);
    const view = new DataView(out.buffer);
    view.setUint16(0, 0xeb9f, true);
    view.setUint8(2, 1); // version
    view.setUint8(3, 0); // flags
    view.setUint32(4, 24, true);
    view.setUint32(8, 0, true);
    view.setUint32(12, typeLen, true);
    view.setUint32(16, typeLen, true);
    view.setUint32(20, strLen, true);
    let pos = 24;
    for (const record of this.records) {
      for (const word of record.words) {
        view.setUint32(pos, word, true);
        pos += 4;
      }
    }
    out.set(this.stringBytes, pos);
    return out;
  }
}
