/** The CLI as a user runs it: the built binary, its exit codes and its JSON shapes. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const built = existsSync(join(root, 'dist', 'cli', 'main.js'));
// scripts/test.sh builds first; running vitest alone on a fresh clone may not have dist/.
const describeBuilt = built || process.env.CI === 'true' ? describe : describe.skip;

function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'switchyard'), ...args], {
    cwd: root,
    encoding: 'utf8',
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describeBuilt('switchyard CLI', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'switchyard-cli-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('runs the bundled agent (dist/agent-bundle) with the agent command alone', () => {
    const r = spawnSync(
      process.execPath,
      [join(root, 'dist', 'agent-bundle', 'entry.js'), 'agent', '--help'],
      {
        encoding: 'utf8',
      },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Usage: switchyard agent \[options\]/);
    const other = spawnSync(process.execPath, [join(root, 'dist', 'agent-bundle', 'entry.js'), 'validate'], {
      encoding: 'utf8',
    });
    expect(other.status).toBe(2);
    expect(other.stderr).toMatch(/unknown command 'validate'/);
  });

  it('validate accepts the examples and exits 0', () => {
    const r = run('validate', 'examples');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok: \d+ file\(s\)/);
  });

  it('validate reports every problem as file:line: Kind ns/name: field: message and exits 1', () => {
    const file = join(tmp, 'bad.yaml');
    writeFileSync(
      file,
      [
        'apiVersion: networking.k8s.io/v1',
        'kind: NetworkPolicy',
        'metadata: { name: np, namespace: default }',
        'spec:',
        '  podSelector: {}',
        '  ingress:',
        '    - ports: [{ port: 70000 }]',
        '  egres: []',
      ].join('\n'),
    );
    const r = run('validate', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `${file}:7: NetworkPolicy default/np: spec.ingress[0].ports[0].port: port must be 1-65535`,
    );
    expect(r.stderr).toContain(`${file}:8: NetworkPolicy default/np: spec.egres: unknown field 'egres'`);
  });

  it('reach --json has the documented shape and self-pairs', () => {
    const r = run('reach', 'examples/xyz', '--port', '81', '--protocol', 'udp', '--json');
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout) as {
      port: number;
      protocol: string;
      results: Record<string, Record<string, boolean>>;
    };
    expect(m.port).toBe(81);
    expect(m.protocol).toBe('UDP');
    expect(Object.keys(m.results)).toHaveLength(9);
    expect(m.results['x/a']?.['x/a']).toBe(true);
    // examples/xyz/allow-x-to-a.yaml isolates x/a: only namespace x reaches it.
    expect(m.results['y/b']?.['x/a']).toBe(false);
    expect(m.results['x/c']?.['x/a']).toBe(true);
  });

  it('explain --json names the deciding policy and rule', () => {
    const r = run(
      'explain',
      'examples/walkthrough',
      'examples/global',
      '--from',
      'shop/backend',
      '--to',
      'shop/db',
      '--port',
      '5432',
      '--json',
    );
    expect(r.code).toBe(0);
    const e = JSON.parse(r.stdout) as {
      allowed: boolean;
      ingress: { rule: { policy: string; source: string } };
    };
    expect(e.allowed).toBe(true);
    expect(e.ingress.rule.policy).toBe('NetworkPolicy shop/db-from-backend');
    expect(e.ingress.rule.source).toMatch(/examples\/walkthrough\/20-allow\.yaml:\d+$/);
  });

  it('explain rejects an unknown pod with the list of pods and exit code 2', () => {
    const r = run('explain', 'examples/walkthrough', '--from', 'shop/nope', '--to', 'shop/db', '--port', '1');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("'shop/nope' is neither an address nor a pod");
  });

  it('compile --backend ir --node slices the IR to one node', () => {
    const all = JSON.parse(run('compile', 'examples/xyz', '--backend', 'ir').stdout) as {
      endpoints: { id: string; node: string }[];
      ruleSets: { endpoint: string }[];
    };
    const one = JSON.parse(
      run('compile', 'examples/xyz', '--backend', 'ir', '--node', 'node-1').stdout,
    ) as typeof all;
    const local = all.endpoints.filter((e) => e.node === 'node-1').map((e) => e.id);
    expect(local.length).toBeGreaterThan(0);
    expect(local.length).toBeLessThan(all.endpoints.length);
    expect(new Set(one.ruleSets.map((r) => r.endpoint))).toEqual(new Set(local));
  });

  it('compile walks the rules unless --policy-mode table, and says which', () => {
    const ir = JSON.parse(
      run('compile', 'examples/walkthrough', '--backend', 'ir', '--policy-mode', 'table').stdout,
    ) as { policyMode?: string; ruleSets: { table?: unknown }[] };
    expect(ir.policyMode).toBe('table');
    expect(ir.ruleSets.every((rs) => rs.table !== undefined)).toBe(true);
    const table = run(
      'compile',
      'examples/walkthrough',
      '--backend',
      'nftables',
      '--node',
      'node-1',
      '--policy-mode',
      'table',
    );
    expect(table.stdout).toMatch(/^# table mode: 4 rule sets as tables \(\d+ entries\), 0 walked$/m);
    const walk = run('compile', 'examples/walkthrough', '--backend', 'nftables', '--node', 'node-1');
    expect(walk.stdout).toMatch(/^# walk mode: 4 rule sets walked$/m);
    const bad = run('compile', 'examples/walkthrough', '--policy-mode', 'fast');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('Allowed choices are table, walk');
  });
});
