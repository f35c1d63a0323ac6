/**
 * Reads the verifier log the kernel returns with a rejected program: what it objected to and at
 * which instruction, so the error can point at the right line of the listing.
 */

const INSTRUCTION_LINE = /^(\d+): \([0-9a-f]{2}\)/;
const SUMMARY_LINE =
  /^(processed \d+ insns|verification time|stack depth|max_states_per_insn|Validating|func#\d+ @\d+|mark_precise|last_idx|regs=|parent didn't have)/;
const STATE_LINE = /^(\d+: R\d|from \d+ to \d+:|\d+: frame\d|; )/;

export interface VerifierFinding {
  /** The verifier's complaint, e.g. "R0 !read_ok". */
  reason: string;
  /** Instruction slot the verifier stopped at, when the log says. */
  instructionIndex: number | undefined;
}

export function parseVerifierLog(log: string): VerifierFinding {
  const lines = log
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line.length > 0);
  let lastInstruction = -1;
  lines.forEach((line, i) => {
    if (INSTRUCTION_LINE.test(line)) lastInstruction = i;
  });
  const meaningful = (line: string): boolean =>
    !SUMMARY_LINE.test(line) && !STATE_LINE.test(line) && !INSTRUCTION_LINE.test(line);
  let reasonLines = lines.slice(lastInstruction + 1).filter(meaningful);
  if (reasonLines.length === 0) {
    const last = lines.filter(meaningful).at(-1);
    reasonLines = last ? [last] : [];
  }
  const reason = reasonLines.join('; ') || 'no reason in the verifier log';

  let instructionIndex: number | undefined;
  const named = /insn (\d+)/.exec(reason);
  if (named?.[1] !== undefined) instructionIndex = Number(named[1]);
  else if (lastInstruction >= 0)
    instructionIndex = Number(INSTRUCTION_LINE.exec(lines[lastInstruction] ?? '')?.[1]);
  return { reason, instructionIndex };
}

/** The lines of a listing around the marked instruction (the `-->` line), for error messages. */
export function listingExcerpt(listing: string, context = 4): string {
  const lines = listing.split('\n');
  const marked = lines.findIndex((line) => line.startsWith('-->'));
  if (marked < 0) return lines.slice(-2 * context).join('\n');
  return lines.slice(Math.max(0, marked - context), marked + context + 1).join('\n');
}
