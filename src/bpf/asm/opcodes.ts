/**
 * eBPF opcode fields (Documentation/bpf/standardization/instruction-set.rst). An opcode byte is
 * class (3 low bits) | size+mode (memory classes) or source+operation (ALU/JMP classes).
 */

export const InsnClass = {
  LD: 0x00,
  LDX: 0x01,
  ST: 0x02,
  STX: 0x03,
  ALU: 0x04,
  JMP: 0x05,
  JMP32: 0x06,
  ALU64: 0x07,
} as const;

export const Size = { W: 0x00, H: 0x08, B: 0x10, DW: 0x18 } as const;
export type SizeName = 'b' | 'h' | 'w' | 'dw';
export const sizeCode: Record<SizeName, number> = { b: Size.B, h: Size.H, w: Size.W, dw: Size.DW };
export const sizeBytes: Record<SizeName, number> = { b: 1, h: 2, w: 4, dw: 8 };

export const Mode = { IMM: 0x00, ABS: 0x20, IND: 0x40, MEM: 0x60, ATOMIC: 0xc0 } as const;

/** Operand source: K = immediate, X = source register. */
export const Source = { K: 0x00, X: 0x08 } as const;

export const AluOp = {
  add: 0x00,
  sub: 0x10,
  mul: 0x20,
  div: 0x30,
  or: 0x40,
  and: 0x50,
  lsh: 0x60,
  rsh: 0x70,
  neg: 0x80,
  mod: 0x90,
  xor: 0xa0,
  mov: 0xb0,
  arsh: 0xc0,
  end: 0xd0,
} as const;
export type AluOpName = Exclude<keyof typeof AluOp, 'neg' | 'end'>;

/** Byte order for BPF_END: TO_LE = 0x00, TO_BE = 0x08 (shares the source bit). */
export const Endian = { le: 0x00, be: 0x08 } as const;

export const JmpOp = {
  ja: 0x00,
  jeq: 0x10,
  jgt: 0x20,
  jge: 0x30,
  jset: 0x40,
  jne: 0x50,
  jsgt: 0x60,
  jsge: 0x70,
  call: 0x80,
  exit: 0x90,
  jlt: 0xa0,
  jle: 0xb0,
  jslt: 0xc0,
  jsle: 0xd0,
} as const;
export type ConditionalJump = Exclude<keyof typeof JmpOp, 'ja' | 'call' | 'exit'>;

/** imm of BPF_ATOMIC instructions; FETCH makes the old value land in the source register. */
export const AtomicOp = {
  add: 0x00,
  or: 0x40,
  and: 0x50,
  xor: 0xa0,
  xchg: 0xe0 | 0x01,
  cmpxchg: 0xf0 | 0x01,
} as const;
export const ATOMIC_FETCH = 0x01;
export type AtomicOpName = keyof typeof AtomicOp;

/** src_reg of LD_IMM64 says what the immediate means. */
export const PseudoLoad = { MAP_FD: 1, MAP_VALUE: 2 } as const;
/** src_reg of BPF_CALL: helper id, bpf-to-bpf call, kfunc. */
export const PseudoCall = { HELPER: 0, CALL: 1, KFUNC: 2 } as const;

export function insnClass(opcode: number): number {
  return opcode & 0x07;
}

export function isAluClass(cls: number): boolean {
  return cls === InsnClass.ALU || cls === InsnClass.ALU64;
}

export function isJumpClass(cls: number): boolean {
  return cls === InsnClass.JMP || cls === InsnClass.JMP32;
}

export const LD_IMM64_OPCODE = InsnClass.LD | Size.DW | Mode.IMM;
