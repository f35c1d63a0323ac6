import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { PrerequisiteError } from './errors.js';

/** Debian package that provides each tool we shell out to, so a missing one names its fix. */
const PACKAGES: Readonly<Record<string, string>> = {
  ip: 'iproute2',
  nsenter: 'util-linux',
  sh: 'dash',
};

// sbin directories are often missing from PATH under sudo or in CI shells.
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];

const found = new Map<string, string | undefined>();

export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  let path: string | undefined;
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      path = candidate;
      break;
    } catch {
      // not here; keep looking
    }
  }
  found.set(name, path);
  return path;
}

/** Absolute path of a tool, or a PrerequisiteError naming the package to install. */
export function requireTool(name: string): string {
  const path = findTool(name);
  if (path) return path;
  const pkg = PACKAGES[name];
  throw new PrerequisiteError(
    `'${name}' is not installed${pkg ? ` (install the Debian package ${pkg}: apt-get install ${pkg})` : ''}`,
  );
}

export function requireTools(names: readonly string[]): void {
  for (const n of names) requireTool(n);
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new PrerequisiteError(`${what} needs root (run it with sudo)`);
}
