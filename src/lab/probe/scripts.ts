import { existsSync } from 'node:fs';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Path of a probe entry point to hand to `node`. From the build it sits beside this module; when
 * running from TypeScript sources (vitest, tsx) the compiled copy in dist/ is used.
 */
export function probeScript(name: 'server' | 'client'): string {
  const here = fileURLToPath(new URL(`./${name}.js`, import.meta.url));
  if (existsSync(here)) return here;
  const built = here.replace(`${sep}src${sep}`, `${sep}dist${sep}`);
  if (existsSync(built)) return built;
  throw new Error(`probe ${name} not found at ${here} or ${built}: run 'npm run build'`);
}
