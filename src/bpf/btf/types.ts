/**
 * The BTF type model: what a decoded type record looks like. Kinds and field layouts follow
 * include/uapi/linux/btf.h; ids are the kernel's (0 is void, split BTF continues the base's ids).
 */

/** BTF_KIND_* numbers, indexed by kind name. */
export const BTF_KINDS = {
  int: 1,
  ptr: 2,
  array: 3,
  struct: 4,
  union: 5,
  enum: 6,
  fwd: 7,
  typedef: 8,
  volatile: 9,
  const: 10,
  restrict: 11,
  func: 12,
  func_proto: 13,
  var: 14,
  datasec: 15,
  float: 16,
  decl_tag: 17,
  type_tag: 18,
  enum64: 19,
} as const;

export type BtfKind = keyof typeof BTF_KINDS;

export const BTF_KIND_NAMES: readonly (BtfKind | undefined)[] = (() => {
  const names: (BtfKind | undefined)[] = [];
  for (const [name, num] of Object.entries(BTF_KINDS)) names[num] = name as BtfKind;
  return names;
})();

/** A struct/union member. bitOffset is from the start of the enclosing type. */
export interface BtfMember {
  name: string;
  type: number;
  bitOffset: number;
  /** 0 unless the member is a bitfield. */
  bitSize: number;
}

export interface BtfEnumValue {
  name: string;
  value: bigint;
}

export interface BtfParam {
  name: string;
  type: number;
}

interface Base {
  id: number;
  name: string;
}

export type BtfType =
  | (Base & { kind: 'void' })
  | (Base & {
      kind: 'int';
      size: number;
      bits: number;
      bitOffset: number;
      signed: boolean;
      char: boolean;
      bool: boolean;
    })
  | (Base & { kind: 'ptr'; target: number })
  | (Base & { kind: 'array'; elem: number; index: number; length: number })
  | (Base & { kind: 'struct' | 'union'; size: number; members: BtfMember[] })
  | (Base & { kind: 'enum' | 'enum64'; size: number; signed: boolean; values: BtfEnumValue[] })
  | (Base & { kind: 'fwd'; union: boolean })
  | (Base & { kind: 'typedef' | 'volatile' | 'const' | 'restrict' | 'type_tag'; target: number })
  | (Base & { kind: 'func'; proto: number; linkage: number })
  | (Base & { kind: 'func_proto'; returns: number; params: BtfParam[] })
  | (Base & { kind: 'var'; type: number; linkage: number })
  | (Base & { kind: 'datasec'; size: number; vars: { type: number; offset: number; size: number }[] })
  | (Base & { kind: 'float'; size: number })
  | (Base & { kind: 'decl_tag'; type: number; componentIdx: number });

/** The record type of kind K (records shared by several kinds are narrowed to K). */
export type BtfTypeOf<K extends BtfType['kind']> = K extends unknown ? Narrow<BtfType, K> : never;
type Narrow<T, K> = T extends { kind: infer TK } ? (K extends TK ? T & { kind: K } : never) : never;

/** Kinds that can be looked up by name (named, top-level declarations). */
export type NamedKind =
  'struct' | 'union' | 'enum' | 'enum64' | 'typedef' | 'func' | 'int' | 'fwd' | 'float' | 'var' | 'datasec';
