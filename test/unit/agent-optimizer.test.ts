import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

/**
 * The agent switches V8's optimizing compiler off after a full sync and on again for the next
 * (agent/memory.ts optimizeBulkWork). V8 flags changed at run time may do nothing: a process
 * like an agent's (`--expose-gc`) warms a fresh function after each switch and asks V8 whether
 * TurboFan compiled it.
 */
const CHILD = `
import { optimizeBulkWork } from ${JSON.stringify(join(root, 'src', 'agent', 'memory.ts'))};
const TURBOFANNED = 1 << 6;
const status = (f) => eval('%GetOptimizationStatus(f)');
function optimized() {
  const f = new Function('a', 'let s = 0; for (let i = 0; i < a; i++) s += i * 2; return s;');
  for (let i = 0; i < 30000; i++) f(200);
  return (status(f) & TURBOFANNED) !== 0;
}
const seen = { atStart: optimized() };
optimizeBulkWork(false);
seen.off = optimized();
optimizeBulkWork(true);
seen.onAgain = optimized();
console.log(JSON.stringify(seen));
`;

function runChild(flags: string[]): Record<string, boolean> {
  const r = spawnSync(
    process.execPath,
    [
      ...flags,
      '--allow-natives-syntax',
      '--no-concurrent-recompilation',
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      CHILD,
    ],
    { cwd: root, encoding: 'utf8' },
  );
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as Record<string, boolean>;
}

describe('optimizeBulkWork (agent/memory.ts)', () => {
  it('turns TurboFan off for changes and on again for the next full sync, in an agent process', () => {
    expect(runChild(['--expose-gc'])).toEqual({ atStart: true, off: false, onAgain: true });
  });

  it('leaves a process without --expose-gc (a test running an agent in-process) as it is', () => {
    expect(runChild([])).toEqual({ atStart: true, off: true, onAgain: true });
  });
});
