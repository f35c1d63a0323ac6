/**
 * CO-RE field relocations, resolved in user space: an instruction that names struct.field gets
 * the field's offset in the BTF of the kernel it will run on, so one program works across kernel
 * builds whose struct layouts differ. (The kernel-side bpf_core_relo records are not needed:
 * we own the loader and patch before BPF_PROG_LOAD.)
 */
import type { CoreField, Instruction } from '../asm/instruction.js';
import { BtfError, type Btf } from './parse.js';
import { memberOffset } from './query.js';

/** Instructions with every CO-RE field reference replaced by its offset in `btf`. */
export function resolveCoreRelocations(
  instructions: readonly Instruction[],
  btf: () => Btf,
): Instruction[] | undefined {
  if (!instructions.some((insn) => insn.core)) return undefined;
  const target = btf();
  return instructions.map((insn, index) => (insn.core ? patch(insn, insn.core, target, index) : insn));
}

function patch(insn: Instruction, core: CoreField, btf: Btf, index: number): Instruction {
  const where = `instruction ${index}: field ${core.struct}.${core.path}`;
  let field;
  try {
    field = memberOffset(btf, core.struct, core.path);
  } catch (err) {
    if (err instanceof BtfError) throw new BtfError(`${where}: ${err.message}`);
    throw err;
  }
  if (field.bitSize !== 0)
    throw new BtfError(`${where} is a bitfield; CO-RE bitfield reads are not supported`);
  if (core.size !== undefined && core.size !== field.size) {
    throw new BtfError(`${where} is ${field.size} bytes in this kernel, the program reads ${core.size}`);
  }
  const { core: _resolved, ...plain } = insn;
  if (core.patch === 'imm') return { ...plain, imm: insn.imm + field.bytes };
  const offset = insn.offset + field.bytes;
  if (offset > 32767) throw new BtfError(`${where}: offset ${offset} does not fit a load's 16-bit offset`);
  return { ...plain, offset };
}
