/**
 * Lookups on parsed BTF: types by name, typedef resolution, sizes, field offsets, enum values.
 */
import { BtfError, type Btf } from './parse.js';
import type { BtfType, BtfTypeOf, NamedKind } from './types.js';

/** The first type of `kind` named `name` (a struct with members wins over a forward declaration). */
export function typeByName<K extends NamedKind>(btf: Btf, kind: K, name: string): BtfTypeOf<K> | undefined {
  const ids = btf.idsByName(kind, name);
  const id = ids[0];
  return id === undefined ? undefined : (btf.type(id) as BtfTypeOf<K>);
}

/** Follows typedefs and qualifiers (const, volatile, restrict, type tags) to the type they name. */
export function resolveType(btf: Btf, id: number): BtfType {
  let type = btf.type(id);
  for (let hops = 0; hops < 64; hops++) {
    switch (type.kind) {
      case 'typedef':
      case 'volatile':
      case 'const':
      case 'restrict':
      case 'type_tag':
        type = btf.type(type.target);
        continue;
      default:
        return type;
    }
  }
  throw new BtfError(`BTF type ${id}: typedef/qualifier chain longer than 64`);
}

/** Size in bytes of type `id` (pointers are 8 bytes: the toolkit runs 64-bit kernels). */
export function sizeOf(btf: Btf, id: number): number {
  const type = resolveType(btf, id);
  switch (type.kind) {
    case 'int':
    case 'struct':
    case 'union':
    case 'enum':
    case 'enum64':
    case 'float':
    case 'datasec':
      return type.size;
    case 'ptr':
      return 8;
    case 'array':
      return type.length * sizeOf(btf, type.elem);
    default:
      throw new BtfError(`BTF type ${id} (${type.kind} '${type.name}') has no size`);
  }
}

export interface FieldLocation {
  /** Byte offset of the field from the start of the struct (the byte holding its first bit). */
  bytes: number;
  /** Offset in bits from the start of the struct (bytes * 8 unless it is a bitfield). */
  bitOffset: number;
  /** Width in bits of a bitfield; 0 for ordinary fields. */
  bitSize: number;
  /** The field's type as declared (use resolveType to see through typedefs). */
  type: BtfType;
  /** Size in bytes of the field's type (of its storage unit for bitfields). */
  size: number;
}

/** A struct or union by name, with its members (not a forward declaration). */
export function compositeByName(btf: Btf, name: string): BtfTypeOf<'struct' | 'union'> {
  for (const kind of ['struct', 'union'] as const) {
    for (const id of btf.idsByName(kind, name)) {
      const type = btf.type(id);
      if (type.kind === kind) return type;
    }
  }
  const typedef = typeByName(btf, 'typedef', name);
  if (typedef) {
    const target = resolveType(btf, typedef.id);
    if (target.kind === 'struct' || target.kind === 'union') return target;
  }
  throw new BtfError(`BTF has no struct or union named '${name}'`);
}

/**
 * Where `path` ("head", "__sk_common.skc_daddr", "addrs[1]") lives inside struct `struct`.
 * Anonymous struct/union members are searched through, as C does. Throws naming the struct
 * and the field that is missing.
 */
export function memberOffset(btf: Btf, struct: string, path: string): FieldLocation {
  let current: BtfType = compositeByName(btf, struct);
  let bitOffset = 0;
  let bitSize = 0;
  let declared: BtfType = current;
  let walked = struct;
  for (const segment of path.split('.')) {
    const match = /^([A-Za-z_]\w*)((?:\[\d+\])*)$/.exec(segment);
    if (!match) throw new BtfError(`struct ${struct}: bad field path segment '${segment}' in '${path}'`);
    const [, field, indexes] = match as unknown as [string, string, string];
    if (current.kind !== 'struct' && current.kind !== 'union') {
      throw new BtfError(`struct ${struct}: '${walked}' is ${describe(current)}, it has no field '${field}'`);
    }
    const found = findMember(btf, current, field);
    if (!found)
      throw new BtfError(
        `struct ${struct} has no field '${field}'${walked === struct ? '' : ` in '${walked}'`}`,
      );
    bitOffset += found.bitOffset;
    bitSize = found.bitSize;
    declared = btf.type(found.type);
    current = resolveType(btf, found.type);
    walked = walked === struct ? field : `${walked}.${field}`;
    for (const index of indexes.match(/\d+/g) ?? []) {
      if (current.kind !== 'array') throw new BtfError(`struct ${struct}: '${walked}' is not an array`);
      const n = Number(index);
      if (n >= current.length && current.length !== 0) {
        throw new BtfError(`struct ${struct}: index ${n} is past '${walked}' (${current.length} elements)`);
      }
      bitOffset += n * sizeOf(btf, current.elem) * 8;
      declared = btf.type(current.elem);
      current = resolveType(btf, current.elem);
      walked += `[${n}]`;
    }
  }
  return {
    bytes: Math.floor(bitOffset / 8),
    bitOffset,
    bitSize,
    type: declared,
    size: sizeOf(btf, declared.id),
  };
}

/** Member `name` of a struct/union, looking into anonymous members; offset relative to `type`. */
function findMember(
  btf: Btf,
  type: BtfTypeOf<'struct' | 'union'>,
  name: string,
): { bitOffset: number; bitSize: number; type: number } | undefined {
  for (const member of type.members) {
    if (member.name === name) return member;
  }
  for (const member of type.members) {
    if (member.name !== '') continue;
    const inner = resolveType(btf, member.type);
    if (inner.kind !== 'struct' && inner.kind !== 'union') continue;
    const found = findMember(btf, inner, name);
    if (found) return { ...found, bitOffset: member.bitOffset + found.bitOffset };
  }
  return undefined;
}

function describe(type: BtfType): string {
  return type.name ? `${type.kind} ${type.name}` : `a ${type.kind}`;
}

/** Name → value of enum `name` (enum or enum64). Throws when BTF has no such enum. */
export function enumValues(btf: Btf, name: string): Map<string, bigint> {
  const type = typeByName(btf, 'enum', name) ?? typeByName(btf, 'enum64', name);
  if (!type) throw new BtfError(`BTF has no enum named '${name}'`);
  return new Map(type.values.map((v) => [v.name, v.value]));
}
