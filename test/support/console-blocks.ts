/**
 * The README tour test's reading and matching of ```console blocks (pure; the kernel test runs
 * them). A block holds `$ command` lines, each followed by the output it shows. Output is compared
 * by *shape*, so the docs need not be rewritten for every timing:
 * - numbers are masked (`719 ms`, `198.18.0.2`, pids and counts all read as `0`);
 * - runs of spaces collapse (table columns may widen or shrink), dash rules read as `--`;
 * - `…` inside an expected line matches any text; a line that is only `…` matches any lines;
 * - a command shown without output only has to exit 0; one shown with output may exit non-zero
 *   (a validation error, say) as long as its output has the expected shape.
 * A block preceded by `<!-- tour: skip (reason) -->` is not run.
 */

export interface ConsoleCommand {
  /** 1-based line of the `$ ` line in the markdown file. */
  line: number;
  command: string;
  /** Expected output lines, as written. */
  expected: string[];
}

export interface ConsoleBlock {
  /** 1-based line of the opening fence. */
  line: number;
  commands: ConsoleCommand[];
  /** Why the block is not run, when marked `<!-- tour: skip (reason) -->`. */
  skip?: string;
}

const SKIP_MARK = /^<!--\s*tour:\s*skip\s*(?:\((.*)\))?\s*-->$/;

export function consoleBlocks(markdown: string): ConsoleBlock[] {
  const lines = markdown.split('\n');
  const blocks: ConsoleBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]?.trim() !== '```console') continue;
    const block: ConsoleBlock = { line: i + 1, commands: [] };
    let before = i - 1;
    while (before >= 0 && lines[before]?.trim() === '') before--;
    const mark = SKIP_MARK.exec(lines[before]?.trim() ?? '');
    if (mark) block.skip = mark[1] ?? 'marked skip';
    let cmd: ConsoleCommand | undefined;
    for (i++; i < lines.length && lines[i]?.trim() !== '```'; i++) {
      const text = lines[i] ?? '';
      if (text.startsWith('$ ')) {
        cmd = { line: i + 1, command: text.slice(2), expected: [] };
        block.commands.push(cmd);
        // A trailing backslash continues the command on the next line.
        while (cmd.command.endsWith('\\') && i + 1 < lines.length)
          cmd.command = cmd.command.slice(0, -1) + (lines[++i] ?? '');
      } else if (cmd) {
        cmd.expected.push(text);
      }
    }
    blocks.push(block);
  }
  return blocks;
}

/** The comparable shape of one output line: numbers masked, spacing collapsed, rules shortened. */
export function shapeOf(line: string): string {
  return line
    .trimEnd()
    .replace(/\d+(?:\.\d+)*/g, '0')
    .replace(/^[- ]*-[- ]*$/, (rule) => rule.replace(/-+/g, '--'))
    .replace(/-{2,}/g, '--')
    .replace(/ {2,}/g, '  ');
}

function lineMatches(expected: string, actual: string): boolean {
  if (!expected.includes('…')) return expected === actual;
  const pattern = expected
    .split('…')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${pattern}$`).test(actual);
}

export interface ShapeMismatch {
  /** Index into the expected lines of the first one that could not be matched (= length: output too long). */
  expectedIndex: number;
  /** Index into the actual lines where matching stopped. */
  actualIndex: number;
}

/**
 * Whether the actual output has the expected shape; when not, where the best attempt stopped
 * (the furthest expected line reached), so the failure can name the README line.
 */
export function matchShape(
  expected: readonly string[],
  actual: readonly string[],
): ShapeMismatch | undefined {
  const want = trimTrailingBlank(expected.map(shapeOf));
  const got = trimTrailingBlank(actual.map(shapeOf));
  let furthest: ShapeMismatch = { expectedIndex: 0, actualIndex: 0 };
  const seen = new Set<string>();
  const match = (e: number, a: number): boolean => {
    const key = `${e},${a}`;
    if (seen.has(key)) return false;
    seen.add(key);
    if (e > furthest.expectedIndex || (e === furthest.expectedIndex && a > furthest.actualIndex))
      furthest = { expectedIndex: e, actualIndex: a };
    if (e === want.length) return a === got.length;
    if (want[e] === '…') return match(e + 1, a) || (a < got.length && match(e, a + 1));
    return a < got.length && lineMatches(want[e] as string, got[a] as string) && match(e + 1, a + 1);
  };
  return match(0, 0) ? undefined : furthest;
}

function trimTrailingBlank(lines: string[]): string[] {
  const out = [...lines];
  while (out.length > 0 && out[out.length - 1] === '') out.pop();
  return out;
}

/** A failure message naming the file and line of the step and of the first line that differs. */
export function describeMismatch(
  file: string,
  cmd: ConsoleCommand,
  actual: readonly string[],
  at: ShapeMismatch,
): string {
  const expectedLine = cmd.line + 1 + at.expectedIndex;
  const want = cmd.expected[at.expectedIndex];
  const got = actual[at.actualIndex];
  return [
    `${file}:${cmd.line}: \`$ ${cmd.command}\` printed output of another shape (numbers masked, spacing collapsed)`,
    want === undefined
      ? `  ${file}:${expectedLine}: the README's output ends here, but the command printed more:`
      : `  ${file}:${expectedLine}: expected  ${want}`,
    got === undefined
      ? '  the command printed nothing more'
      : `  ${' '.repeat(file.length + String(expectedLine).length + 3)}actual    ${got}`,
    '  --- expected (as written):',
    ...cmd.expected.map((l) => `  | ${l}`),
    '  --- actual:',
    ...actual.map((l) => `  | ${l}`),
  ].join('\n');
}
