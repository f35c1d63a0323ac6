import { insnClass, isJumpClass, JmpOp, LD_IMM64_OPCODE, PseudoLoad } from './opcodes.js';

/** One of r0..r10; r10 is the read-only frame pointer. */
export interface Register {
  readonly reg: number;
}

function register(reg: number): Register {
  return Object.freeze({ reg });
}

export const R0 = register(0);
export const R1 = register(1);
export const R2 = register(2);
export const R3 = register(3);
export const R4 = register(4);
export const R5 = register(5);
export const R6 = register(6);
export const R7 = register(7);
export const R8 = register(8);
export const R9 = register(9);
export const R10 = register(10);
/** The frame pointer: stack slots are at negative offsets from it. */
export const FP = R10;

export const REGISTERS: readonly Register[] = [R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10];

export function isRegister(value: unknown): value is Register {
  return typeof value === 'object' && value !== null && typeof (value as { reg?: unknown }).reg === 'number';
}

/** A reference from an LD_IMM64 instruction to a map, resolved to an fd when the program loads. */
export interface MapReference {
  readonly name: string;
  /** 'fd' loads a map pointer (BPF_PSEUDO_MAP_FD); 'value' a pointer into an array's value. */
  readonly kind: 'fd' | 'value';
  readonly valueOffset: number;
}

/**
 * A decoded instruction. LD_IMM64 is one Instruction that occupies two 8-byte slots; `imm` holds
 * the low and `imm2` the high 32 bits of its constant.
 */
export interface Instruction {
  readonly opcode: number;
  readonly dst: number;
  readonly src: number;
  readonly offset: number;
  readonly imm: number;
  readonly imm2?: number;
  readonly mapRef?: MapReference;
  /** The label a jump was written against (informational once resolved into `offset`). */
  readonly target?: string;
  /** A CO-RE field reference: the loader writes the field's offset in the running kernel here. */
  readonly core?: CoreField;
}

/**
 * A struct field the instruction reads (or whose offset it needs), resolved against the running
 * kernel's BTF when the program loads: `offset` patches a load's offset, `imm` an immediate.
 * `size` (loads) is checked against the field's size in that kernel.
 */
export interface CoreField {
  readonly struct: string;
  /** "skc_daddr", "__sk_common.skc_daddr", "addrs[1]". */
  readonly path: string;
  readonly patch: 'offset' | 'imm';
  readonly size?: number;
}

export const INSN_SIZE = 8;

export function isLdImm64(insn: Pick<Instruction, 'opcode'>): boolean {
  return insn.opcode === LD_IMM64_OPCODE;
}

export function slotCount(insn: Pick<Instruction, 'opcode'>): number {
  return isLdImm64(insn) ? 2 : 1;
}

/** Whether `offset` is a pc-relative jump distance (conditional or unconditional jump). */
export function isJump(insn: Pick<Instruction, 'opcode'>): boolean {
  if (!isJumpClass(insnClass(insn.opcode))) return false;
  const op = insn.opcode & 0xf0;
  return op !== JmpOp.call && op !== JmpOp.exit;
}

export function totalSlots(instructions: readonly Instruction[]): number {
  return instructions.reduce((n, insn) => n + slotCount(insn), 0);
}

function checkRange(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`instruction ${name} ${value} outside [${min}, ${max}]`);
}

/**
 * Writes instructions in the kernel's struct bpf_insn layout (little-endian host). `mapFd` turns a
 * map reference into its fd; without it references encode as fd 0, fine for listings and tests.
 */
export function encodeInstructions(
  instructions: readonly Instruction[],
  mapFd: (ref: MapReference) => number = () => 0,
  target: Buffer = Buffer.alloc(totalSlots(instructions) * INSN_SIZE),
): Buffer {
  let pos = 0;
  for (const insn of instructions) {
    checkRange('dst register', insn.dst, 0, 15);
    checkRange('src register', insn.src, 0, 15);
    checkRange('offset', insn.offset, -32768, 32767);
    target.writeUInt8(insn.opcode, pos);
    target.writeUInt8((insn.src << 4) | insn.dst, pos + 1);
    target.writeInt16LE(insn.offset, pos + 2);
    let imm = insn.imm;
    if (insn.mapRef) imm = mapFd(insn.mapRef);
    target.writeInt32LE(imm | 0, pos + 4);
    pos += INSN_SIZE;
    if (isLdImm64(insn)) {
      target.fill(0, pos, pos + 4);
      const high = insn.mapRef?.kind === 'value' ? insn.mapRef.valueOffset : (insn.imm2 ?? 0);
      target.writeInt32LE(high | 0, pos + 4);
      pos += INSN_SIZE;
    }
  }
  return target;
}

/** Reads struct bpf_insn records back; map loads come back as fd numbers in `imm`. */
export function decodeInstructions(bytes: Buffer): Instruction[] {
  if (bytes.length % INSN_SIZE !== 0)
    throw new RangeError(`instruction bytes must be a multiple of 8, got ${bytes.length}`);
  const out: Instruction[] = [];
  for (let pos = 0; pos < bytes.length; pos += INSN_SIZE) {
    const opcode = bytes.readUInt8(pos);
    const regs = bytes.readUInt8(pos + 1);
    const base = {
      opcode,
      dst: regs & 0x0f,
      src: regs >> 4,
      offset: bytes.readInt16LE(pos + 2),
      imm: bytes.readInt32LE(pos + 4),
    };
    if (opcode === LD_IMM64_OPCODE && pos + INSN_SIZE < bytes.length) {
      out.push({ ...base, imm2: bytes.readInt32LE(pos + INSN_SIZE + 4) });
      pos += INSN_SIZE;
    } else {
      out.push(base);
    }
  }
  return out;
}

/** The 64-bit constant of an LD_IMM64 instruction. */
export function ldImm64Value(insn: Instruction): bigint {
  return BigInt.asUintN(64, (BigInt(insn.imm2 ?? 0) << 32n) | BigInt(insn.imm >>> 0));
}

export function isMapLoad(insn: Instruction): boolean {
  return isLdImm64(insn) && (insn.src === PseudoLoad.MAP_FD || insn.src === PseudoLoad.MAP_VALUE);
}
