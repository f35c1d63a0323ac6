import type { AssembledProgram } from './builder.js';
import { helperName } from './helpers.js';
import { decodeInstructions, isLdImm64, ldImm64Value, slotCount, type Instruction } from './instruction.js';
import {
  AluOp,
  ATOMIC_FETCH,
  AtomicOp,
  Endian,
  InsnClass,
  insnClass,
  JmpOp,
  Mode,
  PseudoCall,
  PseudoLoad,
  Size,
  Source,
} from './opcodes.js';

/**
 * Text in the style of the kernel verifier log (kernel/bpf/disasm.c), so a listing and a verifier
 * complaint read the same way:
 *
 *     xdp_main:
 *     ; load the packet pointer
 *          0: (61) r2 = *(u32 *)(r1 +0)
 *          1: (15) if r2 == 0x0 goto pc+1 <pass>
 *
 * Comments (`Assembler.comment`) come out as `; text` lines, where the kernel prints the source
 * line a BTF line info names.
 */

export interface DisassembleOptions {
  /** Label name → slot index; printed as `name:` lines and `<name>` after jumps. */
  labels?: ReadonlyMap<string, number>;
  /** Slot index to mark with `-->` (the instruction the verifier rejected). */
  mark?: number;
  /** Names for map fds when disassembling raw bytes. */
  mapNames?: ReadonlyMap<number, string>;
  /** Slot index → comments printed before it (default: an assembled program's own). */
  comments?: ReadonlyMap<number, readonly string[]>;
}

const ALU_SYMBOLS: Record<number, string> = {
  [AluOp.add]: '+=',
  [AluOp.sub]: '-=',
  [AluOp.mul]: '*=',
  [AluOp.div]: '/=',
  [AluOp.or]: '|=',
  [AluOp.and]: '&=',
  [AluOp.lsh]: '<<=',
  [AluOp.rsh]: '>>=',
  [AluOp.mod]: '%=',
  [AluOp.xor]: '^=',
  [AluOp.mov]: '=',
  [AluOp.arsh]: 's>>=',
};

const JMP_SYMBOLS: Record<number, string> = {
  [JmpOp.jeq]: '==',
  [JmpOp.jgt]: '>',
  [JmpOp.jge]: '>=',
  [JmpOp.jset]: '&',
  [JmpOp.jne]: '!=',
  [JmpOp.jsgt]: 's>',
  [JmpOp.jsge]: 's>=',
  [JmpOp.jlt]: '<',
  [JmpOp.jle]: '<=',
  [JmpOp.jslt]: 's<',
  [JmpOp.jsle]: 's<=',
};

const SIZE_TYPES: Record<number, string> = {
  [Size.B]: 'u8',
  [Size.H]: 'u16',
  [Size.W]: 'u32',
  [Size.DW]: 'u64',
};

const ATOMIC_NAMES: Record<number, string> = {
  [AtomicOp.add]: 'add',
  [AtomicOp.or]: 'or',
  [AtomicOp.and]: 'and',
  [AtomicOp.xor]: 'xor',
};

function signed(offset: number): string {
  return offset >= 0 ? `+${offset}` : `${offset}`;
}

function hex(value: number): string {
  return value < 0 ? `-0x${(-value).toString(16)}` : `0x${value.toString(16)}`;
}

function memRef(insn: Instruction, base: number): string {
  return `*(${SIZE_TYPES[insn.opcode & 0x18]} *)(r${base} ${signed(insn.offset)})`;
}

function formatAlu(insn: Instruction): string {
  const cls = insnClass(insn.opcode);
  const r = cls === InsnClass.ALU64 ? 'r' : 'w';
  const op = insn.opcode & 0xf0;
  if (op === AluOp.end) {
    const order = (insn.opcode & 0x08) === Endian.be ? 'be' : 'le';
    return `r${insn.dst} = ${order}${insn.imm} r${insn.dst}`;
  }
  if (op === AluOp.neg) return `${r}${insn.dst} = -${r}${insn.dst}`;
  const symbol = ALU_SYMBOLS[op] ?? `alu?${hex(op)}`;
  const operand = (insn.opcode & Source.X) === Source.X ? `${r}${insn.src}` : `${insn.imm}`;
  return `${r}${insn.dst} ${symbol} ${operand}`;
}

function formatJump(insn: Instruction, slot: number, labelAt: (slot: number) => string | undefined): string {
  const cls = insnClass(insn.opcode);
  const op = insn.opcode & 0xf0;
  if (op === JmpOp.exit) return 'exit';
  if (op === JmpOp.call) {
    if (insn.src === PseudoCall.CALL)
      return `call pc${signed(insn.imm)}${suffix(labelAt(slot + 1 + insn.imm))}`;
    if (insn.src === PseudoCall.KFUNC) return `call kernel-function#${insn.imm}`;
    return `call ${helperName(insn.imm) ?? 'unknown'}#${insn.imm}`;
  }
  const target = suffix(labelAt(slot + 1 + insn.offset));
  if (op === JmpOp.ja) return `goto pc${signed(insn.offset)}${target}`;
  const r = cls === InsnClass.JMP32 ? 'w' : 'r';
  const symbol = JMP_SYMBOLS[op] ?? `jmp?${hex(op)}`;
  const operand = (insn.opcode & Source.X) === Source.X ? `${r}${insn.src}` : hex(insn.imm);
  return `if ${r}${insn.dst} ${symbol} ${operand} goto pc${signed(insn.offset)}${target}`;
}

function suffix(label: string | undefined): string {
  return label ? ` <${label}>` : '';
}

function formatAtomic(insn: Instruction): string {
  const width = (insn.opcode & 0x18) === Size.DW ? '64' : '';
  const target = `(${SIZE_TYPES[insn.opcode & 0x18]} *)(r${insn.dst} ${signed(insn.offset)})`;
  if (insn.imm === AtomicOp.xchg) return `r${insn.src} = atomic${width}_xchg(${target}, r${insn.src})`;
  if (insn.imm === AtomicOp.cmpxchg) return `r0 = atomic${width}_cmpxchg(${target}, r0, r${insn.src})`;
  const name = ATOMIC_NAMES[insn.imm & ~ATOMIC_FETCH] ?? `op${hex(insn.imm)}`;
  if (insn.imm & ATOMIC_FETCH) return `r${insn.src} = atomic${width}_fetch_${name}(${target}, r${insn.src})`;
  const symbol = { add: '+=', or: '|=', and: '&=', xor: '^=' }[name] ?? name;
  return `lock ${memRef(insn, insn.dst)} ${symbol} r${insn.src}`;
}

function formatLdImm64(insn: Instruction, mapNames: ReadonlyMap<number, string> | undefined): string {
  if (insn.src === PseudoLoad.MAP_FD || insn.src === PseudoLoad.MAP_VALUE) {
    const name = insn.mapRef?.name ?? mapNames?.get(insn.imm) ?? `fd:${insn.imm}`;
    if (insn.src === PseudoLoad.MAP_FD) return `r${insn.dst} = map[${name}]`;
    const offset = insn.mapRef?.valueOffset ?? insn.imm2 ?? 0;
    return `r${insn.dst} = map_value[${name}]${offset ? ` + ${offset}` : ''}`;
  }
  return `r${insn.dst} = 0x${ldImm64Value(insn).toString(16)} ll`;
}

/** One instruction as text (without index or opcode byte). */
export function formatInstruction(
  insn: Instruction,
  slot = 0,
  labelAt: (slot: number) => string | undefined = () => undefined,
  mapNames?: ReadonlyMap<number, string>,
): string {
  const cls = insnClass(insn.opcode);
  const mode = insn.opcode & 0xe0;
  switch (cls) {
    case InsnClass.ALU:
    case InsnClass.ALU64:
      return formatAlu(insn);
    case InsnClass.JMP:
    case InsnClass.JMP32:
      return formatJump(insn, slot, labelAt);
    case InsnClass.LDX:
      return `r${insn.dst} = ${memRef(insn, insn.src)}`;
    case InsnClass.STX:
      if (mode === Mode.ATOMIC) return formatAtomic(insn);
      return `${memRef(insn, insn.dst)} = r${insn.src}`;
    case InsnClass.ST:
      return `${memRef(insn, insn.dst)} = ${insn.imm}`;
    case InsnClass.LD:
      if (isLdImm64(insn)) return formatLdImm64(insn, mapNames);
      if (mode === Mode.ABS) return `r0 = *(${SIZE_TYPES[insn.opcode & 0x18]} *)skb[${insn.imm}]`;
      if (mode === Mode.IND)
        return `r0 = *(${SIZE_TYPES[insn.opcode & 0x18]} *)skb[r${insn.src} + ${insn.imm}]`;
      return `ld?${hex(insn.opcode)}`;
    default:
      return `unknown opcode ${hex(insn.opcode)}`;
  }
}

/** The comment in force at `slot`: the last one placed at or before it. */
export function commentAt(program: AssembledProgram, slot: number): string | undefined {
  let best: number | undefined;
  for (const at of program.comments?.keys() ?? [])
    if (at <= slot && (best === undefined || at > best)) best = at;
  return best === undefined ? undefined : program.comments?.get(best)?.at(-1);
}

function isAssembled(value: unknown): value is AssembledProgram {
  return typeof value === 'object' && value !== null && 'instructions' in value && 'labels' in value;
}

/** A listing of a whole program: labels on their own lines, one instruction per line. */
export function disassemble(
  program: AssembledProgram | readonly Instruction[] | Buffer,
  options: DisassembleOptions = {},
): string {
  let instructions: readonly Instruction[];
  let labels = options.labels;
  let comments = options.comments;
  if (Buffer.isBuffer(program)) instructions = decodeInstructions(program);
  else if (isAssembled(program)) {
    instructions = program.instructions;
    labels ??= program.labels;
    comments ??= program.comments;
  } else instructions = program;

  const labelsBySlot = new Map<number, string[]>();
  for (const [name, slot] of labels ?? []) {
    const names = labelsBySlot.get(slot) ?? [];
    names.push(name);
    labelsBySlot.set(slot, names);
  }
  const labelAt = (slot: number): string | undefined => labelsBySlot.get(slot)?.[0];

  const lines: string[] = [];
  let slot = 0;
  for (const insn of instructions) {
    const names = labelsBySlot.get(slot);
    if (names) for (const name of names) lines.push(`${name}:`);
    const texts = comments?.get(slot);
    if (texts) for (const text of texts) lines.push(`; ${text}`);
    const marker = options.mark === slot ? '-->' : '   ';
    lines.push(
      `${marker} ${slot < 100 ? String(slot).padStart(3) : slot}: (${OPCODE_HEX[insn.opcode & 0xff]}) ${formatInstruction(insn, slot, labelAt, options.mapNames)}`,
    );
    slot += slotCount(insn);
  }
  return lines.join('\n');
}

/** `(b7)`: every opcode byte as two hex digits, computed once rather than per instruction. */
const OPCODE_HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
