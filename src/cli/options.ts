/** Argument parsers shared by commands, so a flag's range check and its message read the same everywhere. */
import { CliError } from './output.js';

/** A parser for a whole number from min to max; the message names the flag, the range and its unit. */
export function integerIn(flag: string, min: number, max: number, unit = ''): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new CliError(`${flag} must be ${min}-${max}${unit ? ` ${unit}` : ''}, not '${v}'`, 2);
    return n;
  };
}

/** `--timeout <ms>` of the commands that open connections in a lab. */
export const parseTimeoutMs = integerIn('--timeout', 10, 60_000, 'ms');
