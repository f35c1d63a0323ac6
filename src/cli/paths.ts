import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (dist/cli/paths.js or src/cli/paths.ts → two levels up). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const EXAMPLES_DIR = join(REPO_ROOT, 'examples');
