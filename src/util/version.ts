/** Switchyard's own version, from its package.json (src/util and dist/util both sit two levels below it). */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function switchyardVersion(): string {
  if (cached === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version?: unknown;
      };
      cached = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      cached = 'unknown';
    }
  }
  return cached;
}
