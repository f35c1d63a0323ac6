/**
 * Codecs turn JavaScript values into the bytes a map key or value holds, and back. They write in
 * place (no allocation per operation) and know their C size and alignment, so struct layouts
 * match what a program sees.
 */
export interface Codec<T> {
  readonly size: number;
  readonly align: number;
  encode(value: T, target: Buffer, offset: number): void;
  decode(source: Buffer, offset: number): T;
}

export type CodecValue<C> = C extends Codec<infer T> ? T : never;

function checkedInt(value: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${what} value ${value} outside [${min}, ${max}]`);
  return value;
}

export const u8: Codec<number> = {
  size: 1,
  align: 1,
  encode: (v, b, o) => void b.writeUInt8(checkedInt(v, 0, 0xff, 'u8'), o),
  decode: (b, o) => b.readUInt8(o),
};

export const u16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, b, o) => void b.writeUInt16LE(checkedInt(v, 0, 0xffff, 'u16'), o),
  decode: (b, o) => b.readUInt16LE(o),
};

export const u32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeUInt32LE(checkedInt(v, 0, 0xffff_ffff, 'u32'), o),
  decode: (b, o) => b.readUInt32LE(o),
};

export const i32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeInt32LE(checkedInt(v, -0x8000_0000, 0x7fff_ffff, 'i32'), o),
  decode: (b, o) => b.readInt32LE(o),
};

export const u64: Codec<bigint> = {
  size: 8,
  align: 8,
  encode: (v, b, o) => void b.writeBigUInt64LE(v, o),
  decode: (b, o) => b.readBigUInt64LE(o),
};

/** A u64 counter read as a JavaScript number; exact up to 2^53. */
export const u64n: Codec<number> = {
  size: 8,
  align: 8,
  encode: (v, b, o) => void b.writeBigUInt64LE(BigInt(checkedInt(v, 0, Number.MAX_SAFE_INTEGER, 'u64n')), o),
  decode: (b, o) => Number(b.readBigUInt64LE(o)),
};

/** __be16: a port or EtherType in network byte order. */
export const be16: Codec<number> = {
  size: 2,
  align: 2,
  encode: (v, b, o) => void b.writeUInt16BE(checkedInt(v, 0, 0xffff, 'be16'), o),
  decode: (b, o) => b.readUInt16BE(o),
};

/** __be32 in network byte order. */
export const be32: Codec<number> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeUInt32BE(checkedInt(v, 0, 0xffff_ffff, 'be32'), o),
  decode: (b, o) => b.readUInt32BE(o),
};

/** Parses dotted-quad IPv4 into a host-order 32-bit number. */
export function parseIpv4(address: string): number {
  const parts = address.split('.');
  if (parts.length !== 4) throw new RangeError(`'${address}' is not an IPv4 address`);
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255)
      throw new RangeError(`'${address}' is not an IPv4 address`);
    value = value * 256 + Number(part);
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** An IPv4 address as the 4 network-order bytes of a __be32. */
export const ipv4: Codec<string> = {
  size: 4,
  align: 4,
  encode: (v, b, o) => void b.writeUInt32BE(parseIpv4(v), o),
  decode: (b, o) => formatIpv4(b.readUInt32BE(o)),
};

/** Parses 'a.b.c.d/n' (a bare address means /32); host bits are cleared. */
export function parseIpv4Cidr(cidr: string): { address: number; prefixLength: number } {
  const [addr, len, extra] = cidr.split('/');
  if (addr === undefined || extra !== undefined) throw new RangeError(`'${cidr}' is not an IPv4 CIDR`);
  const prefixLength = len === undefined ? 32 : Number(len);
  if (
    !Number.isInteger(prefixLength) ||
    prefixLength < 0 ||
    prefixLength > 32 ||
    (len !== undefined && !/^\d+$/.test(len))
  )
    throw new RangeError(`'${cidr}' has an invalid prefix length`);
  const mask = prefixLength === 0 ? 0 : (0xffff_ffff << (32 - prefixLength)) >>> 0;
  return { address: (parseIpv4(addr) & mask) >>> 0, prefixLength };
}

/**
 * struct bpf_lpm_trie_key for IPv4: a host-order u32 prefix length, then the address in network
 * order. Values are CIDR strings; lookups use a /32 of the address being matched.
 */
export const ipv4LpmKey: Codec<string> = {
  size: 8,
  align: 4,
  encode: (v, b, o) => {
    const { address, prefixLength } = parseIpv4Cidr(v);
    b.writeUInt32LE(prefixLength, o);
    b.writeUInt32BE(address, o + 4);
  },
  decode: (b, o) => `${formatIpv4(b.readUInt32BE(o + 4))}/${b.readUInt32LE(o)}`,
};

/** A fixed number of raw bytes (shorter input is zero-padded). */
export function bytes(size: number): Codec<Buffer> {
  return {
    size,
    align: 1,
    encode: (v, b, o) => {
      if (v.length > size) throw new RangeError(`${v.length} bytes do not fit a ${size}-byte field`);
      v.copy(b, o);
      b.fill(0, o + v.length, o + size);
    },
    decode: (b, o) => Buffer.from(b.subarray(o, o + size)),
  };
}

/** A NUL-padded char array, e.g. char comm[16]. */
export function cString(size: number): Codec<string> {
  return {
    size,
    align: 1,
    encode: (v, b, o) => {
      const raw = Buffer.from(v, 'utf8');
      if (raw.length >= size) throw new RangeError(`'${v}' does not fit char[${size}] with its NUL`);
      raw.copy(b, o);
      b.fill(0, o + raw.length, o + size);
    },
    decode: (b, o) => {
      const end = b.indexOf(0, o);
      return b.toString('utf8', o, end < 0 || end > o + size ? o + size : end);
    },
  };
}

/** T[length] laid out back to back. */
export function array<T>(element: Codec<T>, length: number): Codec<T[]> {
  const stride = alignUp(element.size, element.align);
  return {
    size: stride * length,
    align: element.align,
    encode: (v, b, o) => {
      if (v.length !== length) throw new RangeError(`expected ${length} elements, got ${v.length}`);
      v.forEach((item, i) => element.encode(item, b, o + i * stride));
    },
    decode: (b, o) => Array.from({ length }, (_, i) => element.decode(b, o + i * stride)),
  };
}

export function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

export interface StructCodec<T> extends Codec<T> {
  /** Byte offset of each field, for programs that read the same struct. */
  readonly offsets: { readonly [K in keyof T]: number };
}

/**
 * A C struct with natural alignment: fields in declaration order, each aligned to its own
 * alignment, the whole padded to the largest. Padding is written as zeros, which hash keys need.
 */
export function struct<F extends Record<string, Codec<unknown>>>(
  fields: F,
): StructCodec<{ [K in keyof F]: CodecValue<F[K]> }> {
  type Value = { [K in keyof F]: CodecValue<F[K]> };
  const layout: { name: keyof F; codec: Codec<unknown>; offset: number }[] = [];
  let offset = 0;
  let align = 1;
  for (const [name, codec] of Object.entries(fields) as [keyof F, Codec<unknown>][]) {
    offset = alignUp(offset, codec.align);
    layout.push({ name, codec, offset });
    offset += codec.size;
    align = Math.max(align, codec.align);
  }
  const size = alignUp(offset, align);
  const offsets = Object.fromEntries(layout.map((f) => [f.name, f.offset])) as { [K in keyof Value]: number };
  return {
    size,
    align,
    offsets,
    encode: (value, b, o) => {
      b.fill(0, o, o + size);
      for (const field of layout) {
        const v = value[field.name];
        if (v === undefined) throw new RangeError(`struct field '${String(field.name)}' is missing`);
        field.codec.encode(v, b, o + field.offset);
      }
    },
    decode: (b, o) => {
      const out: Partial<Value> = {};
      for (const field of layout) out[field.name] = field.codec.decode(b, o + field.offset) as Value[keyof F];
      return out as Value;
    },
  };
}

/** Encodes one value into a fresh Buffer (tests, program constants). */
export function encode<T>(codec: Codec<T>, value: T): Buffer {
  const out = Buffer.alloc(codec.size);
  codec.encode(value, out, 0);
  return out;
}

export function decode<T>(codec: Codec<T>, source: Buffer): T {
  if (source.length < codec.size) throw new RangeError(`need ${codec.size} bytes, got ${source.length}`);
  return codec.decode(source, 0);
}
