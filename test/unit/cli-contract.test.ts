/**
 * The scripting contract of docs/cli.md, on the built CLI as a child process: exit codes (usage 2,
 * failure 1), errors as one JSON object under --json, manifests from stdin, shell completion.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const built = existsSync(join(root, 'dist', 'cli', 'main.js'));
const describeBuilt = built || process.env.CI === 'true' ? describe : describe.skip;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: readonly string[], input?: string): Run {
  const env = { ...process.env };
  delete env.SWITCHYARD_LAB;
  delete env.SWITCHYARD_ETCD;
  const r = spawnSync(process.execPath, [join(root, 'bin', 'switchyard'), ...args], {
    cwd: root,
    encoding: 'utf8',
    env,
    ...(input !== undefined ? { input } : {}),
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface JsonError {
  error: { code: string; message: string; exitCode: number; [k: string]: unknown };
}

/** A --json run that failed: exactly one JSON object on stdout, nothing on stderr. */
function jsonError(args: readonly string[], input?: string): JsonError['error'] & { status: number } {
  const r = run([...args, '--json'], input);
  expect(r.stderr).toBe('');
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  const parsed = JSON.parse(lines[0] ?? '') as JsonError;
  expect(parsed.error.exitCode).toBe(r.code);
  return { ...parsed.error, status: r.code };
}

const BAD_POD = 'apiVersion: v1\nkind: Pod\nmetadata: { name: p }\nspec:\n  nodeName: 7\n';
const GOOD = 'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop }\n';

describeBuilt('CLI contract', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-contract-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('usage errors exit 2 in every layer: commander, option parsers, command checks', () => {
    expect(run(['lab', 'up', 'x', '--bogus']).code).toBe(2);
    expect(run(['compile']).code).toBe(2);
    expect(run(['nosuch']).code).toBe(2);
    expect(run(['lab']).code).toBe(2);
    expect(run(['reach', 'examples/xyz', '--port', '70000']).code).toBe(2);
    expect(run(['compile', 'examples/xyz', '--backend', 'bogus']).code).toBe(2);
    expect(run(['--help']).code).toBe(0);
    expect(run(['--version']).code).toBe(0);
  });

  it('under --json, errors are one JSON object on stdout with a stable code', () => {
    expect(jsonError(['lab', 'up', 'x', '--bogus'])).toMatchObject({
      code: 'unknown-option',
      message: "unknown option '--bogus'",
      status: 2,
    });
    expect(jsonError(['compile'])).toMatchObject({ code: 'missing-argument', status: 2 });
    expect(jsonError(['reach', 'examples/xyz', '--port', '0'])).toMatchObject({ code: 'usage', status: 2 });
    expect(jsonError(['compile', 'no/such/dir'])).toMatchObject({ code: 'failed', status: 1 });
    const file = join(tmp, 'bad.yaml');
    writeFileSync(file, BAD_POD);
    const invalid = jsonError(['compile', file]);
    expect(invalid).toMatchObject({ code: 'invalid-manifests', status: 1 });
    expect(invalid.issues).toEqual([expect.objectContaining({ file, line: 5, field: 'spec.nodeName' })]);
  });

  it('without --json, an error is one line on stderr and stdout stays empty', () => {
    const r = run(['compile', 'examples/xyz', '--backend', 'bogus']);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^switchyard: --backend must be ir, /);
  });

  it('validate reads manifests from stdin with -f - (and -), naming them <stdin>', () => {
    const ok = run(['validate', '-f', '-'], GOOD);
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.stdout).toMatch(/^ok: 1 file\(s\): 2 namespaces/);
    expect(run(['validate', '-'], GOOD).code).toBe(0);
    const bad = run(['validate', '-f', '-', '--json'], BAD_POD);
    expect(bad.code).toBe(1);
    const result = JSON.parse(bad.stdout) as { valid: boolean; files: string[]; issues: { file: string }[] };
    expect(result).toMatchObject({ valid: false, files: ['<stdin>'] });
    expect(result.issues[0]?.file).toBe('<stdin>');
    // -f adds to the positional paths: both are validated as one input.
    const dir = join(tmp, 'more');
    writeFileSync(join(tmp, 'ns.yaml'), GOOD);
    expect(run(['validate', join(tmp, 'ns.yaml'), '-f', '-'], GOOD.replace('shop', 'web')).stdout).toMatch(
      /^ok: 2 file\(s\): 3 namespaces/,
    );
    expect(existsSync(dir)).toBe(false);
  });

  it('delete -f - names the objects in the manifests (and reports a bad one at <stdin>:LINE)', () => {
    const r = jsonError(['delete', '-f', '-', '--etcd', 'http://127.0.0.1:9'], 'apiVersion: v1\nkind: Pod\n');
    expect(r).toMatchObject({ code: 'invalid-manifests', status: 1 });
    expect(r.message).toBe('<stdin>:1: a manifest to delete needs kind and metadata.name');
    expect(jsonError(['delete', 'pod', 'p', '-f', '-'], GOOD)).toMatchObject({
      code: 'conflicting-options',
      status: 2,
    });
  });

  it('apply needs paths or -f; with -f - it reads stdin and goes on to etcd', () => {
    expect(jsonError(['apply', '--etcd', 'http://127.0.0.1:9'])).toMatchObject({
      code: 'missing-argument',
      status: 2,
    });
    // Past reading the manifests, the unreachable etcd is what fails (a datastore error, exit 1).
    expect(jsonError(['apply', '-f', '-', '--etcd', 'http://127.0.0.1:9'], GOOD)).toMatchObject({
      code: 'datastore',
      status: 1,
    });
  });

  it('cluster status --json revisions are numbers (the formatter converts agents’ strings)', async () => {
    // Shape only: the conversion is a pure function of the command module.
    const { statusJson } = await import('../../src/cli/cluster.js');
    const out = statusJson({
      name: 'c',
      etcd: { url: 'u', members: [], running: true, revision: 7 },
      nodes: [
        { node: 'node-1', revision: '12', cutOff: false },
        { node: 'node-2', cutOff: true },
      ],
    }) as { nodes: { revision?: unknown }[] };
    expect(out.nodes[0]?.revision).toBe(12);
    expect(out.nodes[1]).not.toHaveProperty('revision');
  });

  it('completion bash is valid bash and completes commands, subcommands, flags and choices', () => {
    const script = run(['completion', 'bash']);
    expect(script.code).toBe(0);
    const file = join(tmp, 'completion.bash');
    writeFileSync(file, script.stdout);
    expect(spawnSync('bash', ['-n', file]).status).toBe(0);
    const complete = (...words: string[]): string[] => {
      const r = spawnSync(
        'bash',
        [
          '-c',
          `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _switchyard; printf '%s\\n' "\${COMPREPLY[@]}"`,
        ],
        { encoding: 'utf8' },
      );
      return r.stdout.split('\n').filter(Boolean);
    };
    expect(complete('switchyard', 'la')).toEqual(['lab']);
    expect(complete('switchyard', 'lab', 'd')).toEqual(['down']);
    expect(complete('switchyard', 'lab', 'up', '--ba')).toEqual(['--backend']);
    expect(complete('switchyard', 'lab', 'up', '--backend', 'n')).toEqual(['none', 'nftables']);
    expect(complete('switchyard', 'lab', 'down', '--')).toContain('--yes');
    // Hidden options stay hidden.
    expect(complete('switchyard', 'lab', 'down', '--')).not.toContain('--name');
    const zsh = run(['completion', 'zsh']);
    expect(zsh.stdout).toMatch(/^#compdef switchyard\n/);
    expect(run(['completion', 'fish']).code).toBe(2);
  });
});
