/** Argument parsers shared by commands, so a flag's range check and its message read the same everywhere. */
import { Option } from 'commander';
import { POLICY_MODES } from '../ir/decision-table.js';
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

/**
 * `--policy-mode table|walk`: decision tables (one lookup per packet, where a table fits the
 * bound) or the rule walk. Without a default of its own: each command says what it falls back to.
 */
export function policyModeOption(fallsBackTo: string): Option {
  return new Option(
    '--policy-mode <mode>',
    `decide each endpoint by a decision table or by walking its rules (default: ${fallsBackTo})`,
  ).choices(POLICY_MODES);
}

/** `--family 4|6`: which of the pods' addresses a probe or question is about (IPv4 by default). */
export function parseFamily(v: string): 4 | 6 {
  if (v === '4' || v === 'ipv4' || v === 'IPv4') return 4;
  if (v === '6' || v === 'ipv6' || v === 'IPv6') return 6;
  throw new CliError(`--family must be 4 or 6, not '${v}'`, 2);
}
