/** Renders rows as an aligned text table for humans; `--json` output bypasses this. */
export function formatTable(headers: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cells = [headers, ...rows].map((row) =>
    row.map((c) => (c === undefined || c === null ? '' : String(c))),
  );
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  const [head, ...body] = cells;
  return [line(head ?? []), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export interface CliErrorOptions extends ErrorOptions {
  /** Stable code scripts match on (docs/cli.md lists them); default `usage` (exit 2) or `failed`. */
  code?: string;
  /** Extra fields of the JSON error object, e.g. the labs that exist. */
  details?: Record<string, unknown>;
}

/** An error the CLI reports as a message, a stable code and an exit code, without a stack trace. */
export class CliError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown>;
  constructor(
    message: string,
    readonly exitCode = 1,
    options?: CliErrorOptions,
  ) {
    super(message, options);
    this.name = 'CliError';
    this.code = options?.code ?? (exitCode === 2 ? 'usage' : 'failed');
    this.details = options?.details ?? {};
  }
}
