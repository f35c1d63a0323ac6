/**
 * Program BTF: the types, func_info and line_info we hand BPF_PROG_LOAD so the verifier's log,
 * `bpftool prog dump xlated` and stack traces name our functions and show the generator's
 * comments (`Assembler.comment`) as source lines. The project has no C source: a "line" is a
 * comment, its file is the program.
 */
import type { AssembledProgram } from '../asm/builder.js';
import { slotCount, type Instruction } from '../asm/instruction.js';
import { InsnClass, JmpOp, PseudoCall } from '../asm/opcodes.js';
import { BtfBuilder } from './builder.js';

const FUNC_INFO_SIZE = 8;
const LINE_INFO_SIZE = 16;

export interface ProgramBtf {
  blob: Uint8Array;
  /** struct bpf_func_info records (insn_off, type_id), one per function. */
  funcInfo: Buffer;
  funcCount: number;
  /** struct bpf_line_info records (insn_off, file_name_off, line_off, line_col). */
  lineInfo: Buffer;
  lineCount: number;
  funcInfoRecSize: number;
  lineInfoRecSize: number;
  /** Function names by first slot, as the kernel will report them. */
  functions: Map<number, string>;
}

/** BTF names are C identifiers; labels and program names may hold '.' or '-'. */
function identifier(text: string): string {
  const cleaned = text.replace(/\W/g, '_');
  return /^[A-Za-z_]/.test(cleaned) ? cleaned : `_${cleaned}`;
}

/** Slot of each subprogram's first instruction → its name (the label called). Slot 0 is main. */
export function functionStarts(instructions: readonly Instruction[], mainName: string): Map<number, string> {
  const starts = new Map<number, string>([[0, identifier(mainName || 'main')]]);
  let slot = 0;
  for (const insn of instructions) {
    if (insn.opcode === (InsnClass.JMP | JmpOp.call) && insn.src === PseudoCall.CALL) {
      const target = slot + 1 + insn.imm;
      if (!starts.has(target)) starts.set(target, identifier(insn.target ?? `sub_${target}`));
    }
    slot += slotCount(insn);
  }
  return new Map([...starts].sort((a, b) => a[0] - b[0]));
}

/** Program BTF, func_info and line_info for `program` loaded under `name`. */
export function programBtf(name: string, program: AssembledProgram | readonly Instruction[]): ProgramBtf {
  const instructions = 'instructions' in program ? program.instructions : program;
  const comments = 'instructions' in program ? program.comments : undefined;
  const b = new BtfBuilder();
  const int = b.int('int', 4, { signed: true });
  const voidPtr = b.ptr(0);
  const proto = b.funcProto(int, [{ name: 'ctx', type: voidPtr }]);
  const functions = functionStarts(instructions, name);
  const funcInfo = Buffer.alloc(functions.size * FUNC_INFO_SIZE);
  let i = 0;
  for (const [slot, fn] of functions) {
    // Static linkage: a global function would be verified on its own against its BTF arguments.
    const typeId = b.func(fn, proto, 0);
    funcInfo.writeUInt32LE(slot, i * FUNC_INFO_SIZE);
    funcInfo.writeUInt32LE(typeId, i * FUNC_INFO_SIZE + 4);
    i++;
  }
  // The kernel wants a line at slot 0 and at every function start, offsets strictly increasing.
  const lines = new Map<number, string>();
  for (const [slot, fn] of functions) lines.set(slot, `${fn}:`);
  for (const [slot, texts] of comments ?? []) lines.set(slot, texts.join('; '));
  const file = b.string(identifier(name || 'main'));
  const sorted = [...lines].sort((a, c) => a[0] - c[0]);
  const lineInfo = Buffer.alloc(sorted.length * LINE_INFO_SIZE);
  sorted.forEach(([slot, text], n) => {
    const at = n * LINE_INFO_SIZE;
    lineInfo.writeUInt32LE(slot, at);
    lineInfo.writeUInt32LE(file, at + 4);
    lineInfo.writeUInt32LE(b.string(text), at + 8);
    lineInfo.writeUInt32LE(((n + 1) << 10) >>> 0, at + 12); // line n+1, column 0
  });
  return {
    blob: b.build(),
    funcInfo,
    funcCount: functions.size,
    lineInfo,
    lineCount: sorted.length,
    funcInfoRecSize: FUNC_INFO_SIZE,
    lineInfoRecSize: LINE_INFO_SIZE,
    functions,
  };
}
