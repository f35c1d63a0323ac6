import { helperId, type HelperName } from './helpers.js';
import {
  isRegister,
  R0,
  R1,
  R2,
  R3,
  R4,
  R10,
  slotCount,
  type Instruction,
  type MapReference,
  type Register,
} from './instruction.js';
import {
  AluOp,
  ATOMIC_FETCH,
  AtomicOp,
  Endian,
  InsnClass,
  JmpOp,
  LD_IMM64_OPCODE,
  Mode,
  PseudoCall,
  PseudoLoad,
  sizeBytes,
  sizeCode,
  Source,
  type AluOpName,
  type AtomicOpName,
  type ConditionalJump,
  type SizeName,
} from './opcodes.js';

/** A register or a 32-bit immediate. */
export type Operand = Register | number;

/** The assembler's output: instructions with jumps resolved and map references still symbolic. */
export interface AssembledProgram {
  readonly instructions: readonly Instruction[];
  /** Label name → instruction slot index (LD_IMM64 takes two slots). */
  readonly labels: ReadonlyMap<string, number>;
  /** Names of the maps the program refers to, in first-use order. */
  readonly mapNames: readonly string[];
  /**
   * Slot index → what the code from there on does (`Assembler.comment`), for listings and
   * verifier errors. Not part of the bytecode.
   */
  readonly comments?: ReadonlyMap<number, readonly string[]>;
}

export class AsmError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AsmError';
  }
}

const INT32_MIN = -0x8000_0000;
const UINT32_MAX = 0xffff_ffff;

function imm32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < INT32_MIN || value > UINT32_MAX)
    throw new AsmError(`${what} ${value} does not fit a 32-bit immediate; load it with ldImm64`);
  return value | 0;
}

function offset16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < -32768 || value > 32767)
    throw new AsmError(`${what} ${value} does not fit a signed 16-bit offset`);
  return value;
}

interface PendingInstruction extends Instruction {
  /** Jump or local call still to be resolved against a label. */
  readonly pendingTarget?: { label: string; field: 'offset' | 'imm' };
}

/**
 * Builds an eBPF program instruction by instruction. Jumps name labels; `assemble()` turns them
 * into pc-relative offsets. Maps are named too and become fds when the program is loaded.
 *
 *     const asm = new Assembler()
 *       .ldxw(R2, R1, 0)            // r2 = xdp->data
 *       .mov64(R0, XdpAction.PASS)
 *       .exit();
 */
export class Assembler {
  private readonly instructions: PendingInstruction[] = [];
  private readonly labelIndex = new Map<string, number>();
  private pendingLabels: string[] = [];
  /** Instruction index → comments; kept beside the code so they never change the bytecode. */
  private readonly commentIndex = new Map<number, string[]>();
  private pendingComments: string[] = [];

  /** Names the next instruction emitted. */
  label(name: string): this {
    if (!name) throw new AsmError('label names must not be empty');
    if (this.labelIndex.has(name) || this.pendingLabels.includes(name))
      throw new AsmError(`label '${name}' defined twice`);
    this.pendingLabels.push(name);
    return this;
  }

  /**
   * Says in words what the next instructions do; disassembly prints it as a `; text` line before
   * the next instruction emitted. A comment no instruction follows is dropped.
   */
  comment(text: string): this {
    this.pendingComments.push(text);
    return this;
  }

  /** Appends an instruction as is. */
  raw(insn: Instruction): this {
    return this.emit(insn);
  }

  get length(): number {
    return this.instructions.length;
  }

  // ---- ALU -----------------------------------------------------------------------------------

  alu64(op: AluOpName, dst: Register, src: Operand): this {
    return this.alu(InsnClass.ALU64, op, dst, src);
  }

  alu32(op: AluOpName, dst: Register, src: Operand): this {
    return this.alu(InsnClass.ALU, op, dst, src);
  }

  mov64(dst: Register, src: Operand): this {
    return this.alu64('mov', dst, src);
  }
  mov32(dst: Register, src: Operand): this {
    return this.alu32('mov', dst, src);
  }
  add64(dst: Register, src: Operand): this {
    return this.alu64('add', dst, src);
  }
  add32(dst: Register, src: Operand): this {
    return this.alu32('add', dst, src);
  }
  sub64(dst: Register, src: Operand): this {
    return this.alu64('sub', dst, src);
  }
  sub32(dst: Register, src: Operand): this {
    return this.alu32('sub', dst, src);
  }
  mul64(dst: Register, src: Operand): this {
    return this.alu64('mul', dst, src);
  }
  div64(dst: Register, src: Operand): this {
    return this.alu64('div', dst, src);
  }
  mod64(dst: Register, src: Operand): this {
    return this.alu64('mod', dst, src);
  }
  and64(dst: Register, src: Operand): this {
    return this.alu64('and', dst, src);
  }
  and32(dst: Register, src: Operand): this {
    return this.alu32('and', dst, src);
  }
  or64(dst: Register, src: Operand): this {
    return this.alu64('or', dst, src);
  }
  xor64(dst: Register, src: Operand): this {
    return this.alu64('xor', dst, src);
  }
  lsh64(dst: Register, src: Operand): this {
    return this.alu64('lsh', dst, src);
  }
  rsh64(dst: Register, src: Operand): this {
    return this.alu64('rsh', dst, src);
  }
  rsh32(dst: Register, src: Operand): this {
    return this.alu32('rsh', dst, src);
  }
  arsh64(dst: Register, src: Operand): this {
    return this.alu64('arsh', dst, src);
  }

  neg64(dst: Register): this {
    return this.emit({ opcode: InsnClass.ALU64 | AluOp.neg, dst: dst.reg, src: 0, offset: 0, imm: 0 });
  }

  neg32(dst: Register): this {
    return this.emit({ opcode: InsnClass.ALU | AluOp.neg, dst: dst.reg, src: 0, offset: 0, imm: 0 });
  }

  /** Converts the low `bits` of dst to big-endian (network order) on this little-endian host. */
  be(dst: Register, bits: 16 | 32 | 64): this {
    return this.endian(Endian.be, dst, bits);
  }

  /** Truncates dst to `bits` in little-endian order (a zero-extension on this host). */
  le(dst: Register, bits: 16 | 32 | 64): this {
    return this.endian(Endian.le, dst, bits);
  }

  // ---- memory --------------------------------------------------------------------------------

  /** dst = *(size *)(src + offset) */
  ldx(size: SizeName, dst: Register, src: Register, offset: number): this {
    return this.memory(InsnClass.LDX, size, dst.reg, src.reg, offset16(offset, 'load offset'), 0);
  }
  ldxb(dst: Register, src: Register, offset: number): this {
    return this.ldx('b', dst, src, offset);
  }
  ldxh(dst: Register, src: Register, offset: number): this {
    return this.ldx('h', dst, src, offset);
  }
  ldxw(dst: Register, src: Register, offset: number): this {
    return this.ldx('w', dst, src, offset);
  }
  ldxdw(dst: Register, src: Register, offset: number): this {
    return this.ldx('dw', dst, src, offset);
  }

  /**
   * dst = *(size *)(src + offsetof(struct, path)) with the offset taken from the running kernel's
   * BTF when the program loads (a CO-RE field relocation); the load fails, naming the field, if
   * the kernel has no such field or its size differs from `size`.
   */
  ldxField(size: SizeName, dst: Register, src: Register, struct: string, path: string): this {
    return this.emit({
      opcode: InsnClass.LDX | Mode.MEM | sizeCode[size],
      dst: dst.reg,
      src: src.reg,
      offset: 0,
      imm: 0,
      core: { struct, path, patch: 'offset', size: sizeBytes[size] },
    });
  }

  /** dst += offsetof(struct, path) in the running kernel (for bpf_probe_read_kernel addresses). */
  addFieldOffset(dst: Register, struct: string, path: string): this {
    return this.emit({
      opcode: InsnClass.ALU64 | AluOp.add | Source.K,
      dst: dst.reg,
      src: 0,
      offset: 0,
      imm: 0,
      core: { struct, path, patch: 'imm' },
    });
  }

  /** *(size *)(dst + offset) = src */
  stx(size: SizeName, dst: Register, offset: number, src: Register): this {
    return this.memory(InsnClass.STX, size, dst.reg, src.reg, offset16(offset, 'store offset'), 0);
  }

  /** *(size *)(dst + offset) = imm */
  st(size: SizeName, dst: Register, offset: number, imm: number): this {
    const value = imm32(imm, 'store immediate');
    return this.memory(InsnClass.ST, size, dst.reg, 0, offset16(offset, 'store offset'), value);
  }

  /**
   * Atomic read-modify-write on *(size *)(dst + offset) with src. With `fetch` the old value lands
   * in src (xchg and cmpxchg always fetch; cmpxchg compares with r0 and returns the old value in r0).
   */
  atomic(
    op: AtomicOpName,
    size: 'w' | 'dw',
    dst: Register,
    offset: number,
    src: Register,
    fetch = false,
  ): this {
    const imm = AtomicOp[op] | (fetch ? ATOMIC_FETCH : 0);
    return this.emit({
      opcode: InsnClass.STX | Mode.ATOMIC | sizeCode[size],
      dst: dst.reg,
      src: src.reg,
      offset: offset16(offset, 'atomic offset'),
      imm,
    });
  }

  /** lock *(size *)(dst + offset) += src */
  atomicAdd(size: 'w' | 'dw', dst: Register, offset: number, src: Register): this {
    return this.atomic('add', size, dst, offset, src);
  }

  /** Legacy packet load for socket filters: r0 = *(size *)skb[imm]. */
  ldAbs(size: Exclude<SizeName, 'dw'>, imm: number): this {
    return this.legacyLoad(Mode.ABS, size, 0, imm);
  }

  /** Legacy packet load for socket filters: r0 = *(size *)skb[src + imm]. */
  ldInd(size: Exclude<SizeName, 'dw'>, src: Register, imm: number): this {
    return this.legacyLoad(Mode.IND, size, src.reg, imm);
  }

  /** dst = a 64-bit constant (two instruction slots). */
  ldImm64(dst: Register, value: bigint | number): this {
    const v = BigInt.asUintN(64, BigInt(value));
    const low = Number(v & 0xffff_ffffn) | 0;
    const high = Number(v >> 32n) | 0;
    return this.emit({ opcode: LD_IMM64_OPCODE, dst: dst.reg, src: 0, offset: 0, imm: low, imm2: high });
  }

  /** dst = pointer to the map named `name` (resolved to its fd at load time). */
  ldMap(dst: Register, name: string): this {
    return this.mapLoad(dst, { name, kind: 'fd', valueOffset: 0 }, PseudoLoad.MAP_FD);
  }

  /** dst = pointer to byte `valueOffset` of element 0 of array map `name` (direct value access). */
  ldMapValue(dst: Register, name: string, valueOffset = 0): this {
    return this.mapLoad(
      dst,
      { name, kind: 'value', valueOffset: imm32(valueOffset, 'value offset') },
      PseudoLoad.MAP_VALUE,
    );
  }

  // ---- control flow --------------------------------------------------------------------------

  /** Unconditional jump. */
  ja(label: string): this {
    return this.emit({
      opcode: InsnClass.JMP | JmpOp.ja,
      dst: 0,
      src: 0,
      offset: 0,
      imm: 0,
      pendingTarget: { label, field: 'offset' },
    });
  }

  /** if (dst op src) goto label — 64-bit compare. */
  jmp(op: ConditionalJump, dst: Register, src: Operand, label: string): this {
    return this.conditional(InsnClass.JMP, op, dst, src, label);
  }

  /** if (dst op src) goto label — compares the low 32 bits. */
  jmp32(op: ConditionalJump, dst: Register, src: Operand, label: string): this {
    return this.conditional(InsnClass.JMP32, op, dst, src, label);
  }

  jeq(dst: Register, src: Operand, label: string): this {
    return this.jmp('jeq', dst, src, label);
  }
  jne(dst: Register, src: Operand, label: string): this {
    return this.jmp('jne', dst, src, label);
  }
  jgt(dst: Register, src: Operand, label: string): this {
    return this.jmp('jgt', dst, src, label);
  }
  jge(dst: Register, src: Operand, label: string): this {
    return this.jmp('jge', dst, src, label);
  }
  jlt(dst: Register, src: Operand, label: string): this {
    return this.jmp('jlt', dst, src, label);
  }
  jle(dst: Register, src: Operand, label: string): this {
    return this.jmp('jle', dst, src, label);
  }
  jset(dst: Register, src: Operand, label: string): this {
    return this.jmp('jset', dst, src, label);
  }
  jsgt(dst: Register, src: Operand, label: string): this {
    return this.jmp('jsgt', dst, src, label);
  }
  jsge(dst: Register, src: Operand, label: string): this {
    return this.jmp('jsge', dst, src, label);
  }
  jslt(dst: Register, src: Operand, label: string): this {
    return this.jmp('jslt', dst, src, label);
  }
  jsle(dst: Register, src: Operand, label: string): this {
    return this.jmp('jsle', dst, src, label);
  }

  /** Calls a kernel helper by name (or raw id); arguments in r1..r5, result in r0. */
  call(helper: HelperName | number): this {
    const id = typeof helper === 'number' ? imm32(helper, 'helper id') : helperId(helper);
    return this.emit({
      opcode: InsnClass.JMP | JmpOp.call,
      dst: 0,
      src: PseudoCall.HELPER,
      offset: 0,
      imm: id,
    });
  }

  /** Calls a bpf-to-bpf subprogram starting at `label`. */
  callLocal(label: string): this {
    return this.emit({
      opcode: InsnClass.JMP | JmpOp.call,
      dst: 0,
      src: PseudoCall.CALL,
      offset: 0,
      imm: 0,
      pendingTarget: { label, field: 'imm' },
    });
  }

  exit(): this {
    return this.emit({ opcode: InsnClass.JMP | JmpOp.exit, dst: 0, src: 0, offset: 0, imm: 0 });
  }

  /** r0 = value; exit */
  exitWith(value: number): this {
    return this.mov64(R0, value).exit();
  }

  // ---- recurring sequences -------------------------------------------------------------------

  /** dst = r10 + offset: a pointer to a stack slot (map keys and values live on the stack). */
  stackAddress(dst: Register, offset: number): this {
    return this.mov64(dst, R10).add64(dst, offset);
  }

  /** r0 = bpf_map_lookup_elem(map, r10 + keyOffset): the value, or 0 when the key is absent. */
  mapLookup(map: string, keyOffset: number): this {
    return this.ldMap(R1, map).stackAddress(R2, keyOffset).call('map_lookup_elem');
  }

  /** bpf_map_update_elem(map, r10 + keyOffset, r10 + valueOffset, flags); flags 0 is BPF_ANY. */
  mapUpdate(map: string, keyOffset: number, valueOffset: number, flags = 0): this {
    return this.ldMap(R1, map)
      .stackAddress(R2, keyOffset)
      .stackAddress(R3, valueOffset)
      .mov64(R4, flags)
      .call('map_update_elem');
  }

  /** bpf_map_delete_elem(map, r10 + keyOffset). */
  mapDelete(map: string, keyOffset: number): this {
    return this.ldMap(R1, map).stackAddress(R2, keyOffset).call('map_delete_elem');
  }

  /**
   * The bounds check the verifier wants before a packet read: goes to `outOfBounds` unless
   * `length` bytes from `start` end at or before `end`. Clobbers `scratch`.
   */
  checkBounds(start: Register, length: number, end: Register, scratch: Register, outOfBounds: string): this {
    return this.mov64(scratch, start).add64(scratch, length).jgt(scratch, end, outOfBounds);
  }

  /** *(size *)(dst + dstOffset) = *(size *)(src + srcOffset), through register `via`. */
  copy(
    size: SizeName,
    dst: Register,
    dstOffset: number,
    src: Register,
    srcOffset: number,
    via: Register,
  ): this {
    return this.ldx(size, via, src, srcOffset).stx(size, dst, dstOffset, via);
  }

  /** Goes to the label of the first case `reg` equals (in the order given), else to `otherwise`. */
  dispatch(reg: Register, cases: readonly (readonly [number, string])[], otherwise?: string): this {
    for (const [value, label] of cases) this.jeq(reg, value, label);
    return otherwise === undefined ? this : this.ja(otherwise);
  }

  /** *(u64 *)(ptr + offset) += by, through `via`: a plain add, for per-CPU values only. */
  addToU64(ptr: Register, offset: number, by: Operand, via: Register): this {
    return this.ldxdw(via, ptr, offset).add64(via, by).stx('dw', ptr, offset, via);
  }

  /** Resolves labels into offsets. The builder can keep growing afterwards. */
  assemble(): AssembledProgram {
    if (this.pendingLabels.length > 0)
      throw new AsmError(
        `label${this.pendingLabels.length > 1 ? 's' : ''} '${this.pendingLabels.join("', '")}' mark no instruction`,
      );
    const slots: number[] = [];
    let slot = 0;
    for (const insn of this.instructions) {
      slots.push(slot);
      slot += slotCount(insn);
    }
    const labels = new Map<string, number>();
    for (const [name, index] of this.labelIndex) labels.set(name, slots[index] as number);
    const comments = new Map<number, readonly string[]>();
    for (const [index, texts] of this.commentIndex) comments.set(slots[index] as number, [...texts]);

    const mapNames: string[] = [];
    const instructions = this.instructions.map((insn, index): Instruction => {
      if (insn.mapRef && !mapNames.includes(insn.mapRef.name)) mapNames.push(insn.mapRef.name);
      // Only jumps carry a pending target; everything else is already final (and immutable), so
      // it is shared rather than copied: a 10,000-program compile assembles millions of them.
      const { pendingTarget } = insn;
      if (!pendingTarget) return insn;
      // Jumps and local calls: no map reference or second immediate to carry over.
      const plain: Instruction = {
        opcode: insn.opcode,
        dst: insn.dst,
        src: insn.src,
        offset: insn.offset,
        imm: insn.imm,
      };
      const targetSlot = labels.get(pendingTarget.label);
      if (targetSlot === undefined) {
        const known = [...labels.keys()];
        throw new AsmError(
          `instruction ${slots[index]} jumps to unknown label '${pendingTarget.label}'${known.length ? ` (known: ${known.join(', ')})` : ''}`,
        );
      }
      const distance = targetSlot - ((slots[index] as number) + 1);
      if (pendingTarget.field === 'imm') return { ...plain, imm: distance, target: pendingTarget.label };
      return {
        ...plain,
        offset: offset16(distance, `jump to '${pendingTarget.label}'`),
        target: pendingTarget.label,
      };
    });
    return { instructions, labels, mapNames, comments };
  }

  private emit(insn: PendingInstruction): this {
    for (const name of this.pendingLabels) this.labelIndex.set(name, this.instructions.length);
    this.pendingLabels = [];
    if (this.pendingComments.length > 0) {
      this.commentIndex.set(this.instructions.length, this.pendingComments);
      this.pendingComments = [];
    }
    this.instructions.push(insn);
    return this;
  }

  private memory(cls: number, size: SizeName, dst: number, src: number, offset: number, imm: number): this {
    return this.emit({ opcode: cls | Mode.MEM | sizeCode[size], dst, src, offset, imm });
  }

  private endian(order: number, dst: Register, bits: 16 | 32 | 64): this {
    return this.emit({
      opcode: InsnClass.ALU | AluOp.end | order,
      dst: dst.reg,
      src: 0,
      offset: 0,
      imm: bits,
    });
  }

  private legacyLoad(mode: number, size: Exclude<SizeName, 'dw'>, src: number, imm: number): this {
    return this.emit({
      opcode: InsnClass.LD | mode | sizeCode[size],
      dst: 0,
      src,
      offset: 0,
      imm: imm32(imm, 'offset'),
    });
  }

  private alu(cls: number, op: AluOpName, dst: Register, src: Operand): this {
    if (isRegister(src)) {
      return this.emit({ opcode: cls | AluOp[op] | Source.X, dst: dst.reg, src: src.reg, offset: 0, imm: 0 });
    }
    return this.emit({
      opcode: cls | AluOp[op] | Source.K,
      dst: dst.reg,
      src: 0,
      offset: 0,
      imm: imm32(src, `${op} immediate`),
    });
  }

  private conditional(cls: number, op: ConditionalJump, dst: Register, src: Operand, label: string): this {
    const target = { label, field: 'offset' as const };
    if (isRegister(src)) {
      return this.emit({
        opcode: cls | JmpOp[op] | Source.X,
        dst: dst.reg,
        src: src.reg,
        offset: 0,
        imm: 0,
        pendingTarget: target,
      });
    }
    return this.emit({
      opcode: cls | JmpOp[op] | Source.K,
      dst: dst.reg,
      src: 0,
      offset: 0,
      imm: imm32(src, `${op} immediate`),
      pendingTarget: target,
    });
  }

  private mapLoad(dst: Register, mapRef: MapReference, pseudo: number): this {
    if (!mapRef.name) throw new AsmError('map references need a name');
    return this.emit({
      opcode: LD_IMM64_OPCODE,
      dst: dst.reg,
      src: pseudo,
      offset: 0,
      imm: 0,
      imm2: 0,
      mapRef,
    });
  }
}
