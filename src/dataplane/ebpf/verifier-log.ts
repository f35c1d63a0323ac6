/**
 * Where a rejected program's verifier log goes: a file, so the error stays a few lines and the
 * log (hundreds of KB for a big program) is there for whoever wants it. Root-only (0600 in a 0700
 * directory): the listing shows the policy.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const VERIFIER_LOG_DIR = '/run/switchyard/verifier';

/** `SWITCHYARD_VERIFIER_LOG=full`: keep the whole log (the verifier runs again to write it). */
export const VERIFIER_LOG_ENV = 'SWITCHYARD_VERIFIER_LOG';

export function fullVerifierLogAsked(): boolean {
  return process.env[VERIFIER_LOG_ENV] === 'full';
}

/** Writes `text` to `<dir>/<program>.log`; returns the path, or undefined when it cannot. */
export function saveVerifierLog(program: string, text: string, dir = VERIFIER_LOG_DIR): string | undefined {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const path = join(dir, `${program}.log`);
    writeFileSync(path, text.endsWith('\n') ? text : `${text}\n`, { mode: 0o600 });
    chmodSync(path, 0o600);
    return path;
  } catch {
    return undefined;
  }
}
