/**
 * The README tour, run as written: every ```console block of README.md, command by command in
 * order, against the output each shows (by shape: see test/support/console-blocks.ts), in labs
 * with names of their own so nothing a user or another test runs is touched. Then the console
 * blocks of docs/*.md that are not marked `<!-- tour: skip (reason) -->`.
 *
 * The set-up commands at the top of README.md are a ```sh block and are not run (they install).
 * `sudo` is dropped (kernel tests run as root).
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { consoleBlocks, describeMismatch, matchShape, type ConsoleBlock } from '../support/console-blocks.js';
import { describeKernel } from '../support/kernel.js';
import { cli, REPO } from './lab-harness.js';

const TAG = process.pid % 10000;
/** The README's lab names (the CLI's defaults) and the unique ones this run uses instead. */
const LABS = [
  { readme: 'demo', ours: `trd${TAG}` },
  { readme: 'cluster', ours: `trc${TAG}` },
] as const;
const [LAB, CLUSTER] = [LABS[0].ours, LABS[1].ours];

/**
 * Until every command reads SWITCHYARD_LAB (issue 22, the `cli` part), the lab name goes into each
 * command line: `--name` for `lab …` and `cluster …`, `--lab` for the commands that take one.
 * Once it has landed, this function can return `command` unchanged (the env below does the rest).
 */
function withOurLabs(command: string): string {
  return command.replace(
    /(\.\/bin\/switchyard\s+)((?:lab|cluster)\s+[a-z-]+|node\s+[a-z-]+|flows|console|apply|get\s+[a-z-]+|delete)(?=\s|$)([^&|;]*)/g,
    (_all, bin: string, cmd: string, rest: string) => {
      const cluster = /--lab\s+cluster\b/.test(rest) || cmd.startsWith('cluster');
      const ours = cluster ? CLUSTER : LAB;
      const named = rest
        .replace(/--lab\s+(demo|cluster)\b/g, `--lab ${ours}`)
        .replace(/--name\s+(demo|cluster)\b/g, `--name ${ours}`);
      if (/--(lab|name)\s/.test(named)) return `${bin}${cmd}${named}`;
      const option = /^(lab|cluster)\s/.test(cmd) ? '--name' : '--lab';
      return `${bin}${cmd} ${option} ${ours}${named}`;
    },
  );
}

/** Our lab names read back as the README's, so outputs compare. */
function asReadme(output: string): string {
  return LABS.reduce((text, l) => text.replaceAll(l.ours, l.readme), output);
}

function run(command: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', `exec 2>&1\n${command}`], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SWITCHYARD_LAB: LAB, NO_COLOR: '1', COLUMNS: '200' },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

function asRun(command: string): string {
  return withOurLabs(command.replace(/(^|&&\s*|\|\|\s*|;\s*)sudo\s+/g, '$1'));
}

/** One `it` per command, in order; a step after a failed one still runs (its own message says more). */
function tour(file: string, blocks: readonly ConsoleBlock[]): void {
  for (const block of blocks) {
    if (block.skip) {
      it.skip(`${file}:${block.line} (skipped: ${block.skip})`, () => undefined);
      continue;
    }
    for (const cmd of block.commands) {
      it(`${file}:${cmd.line} $ ${cmd.command}`, async () => {
        const ran = asRun(cmd.command);
        const { code, output } = await run(ran);
        const actual = asReadme(output).replace(/\n$/, '').split('\n');
        const shown = cmd.expected.some((l) => l.trim() !== '');
        if (!shown) {
          expect(
            code,
            `${file}:${cmd.line}: \`$ ${cmd.command}\` (ran: ${ran}) exited ${code}:\n${output}`,
          ).toBe(0);
          return;
        }
        const mismatch = matchShape(cmd.expected, output === '' ? [] : actual);
        if (mismatch)
          expect.fail(`${describeMismatch(file, cmd, actual, mismatch)}\n  (ran: ${ran}; exit ${code})`);
      }, 180_000);
    }
  }
}

describeKernel('the README tour runs as written', () => {
  afterAll(async () => {
    await cli(['cluster', 'down', '--name', CLUSTER]);
    await cli(['lab', 'down', '--name', LAB]);
  }, 120_000);

  describe('README.md', () => {
    const blocks = consoleBlocks(readFileSync(join(REPO, 'README.md'), 'utf8'));
    it('has console blocks to run', () => expect(blocks.length).toBeGreaterThan(3));
    tour('README.md', blocks);
  });

  const docs = readdirSync(join(REPO, 'docs')).filter((f) => f.endsWith('.md'));
  for (const doc of docs) {
    const blocks = consoleBlocks(readFileSync(join(REPO, 'docs', doc), 'utf8'));
    if (blocks.length > 0) describe(`docs/${doc}`, () => tour(`docs/${doc}`, blocks));
  }
});
