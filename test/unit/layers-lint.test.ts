/**
 * The layers lint (eslint-rules/layers.js): wrong imports fail with a message naming both folders and the
 * reason, allowed ones pass, the known-violations list can only shrink, and the layer table has no cycle.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { Linter } from 'eslint';
import tseslint from 'typescript-eslint';
import { describe, expect, it } from 'vitest';
import layers, { ROOT, type KnownViolation } from '../../eslint-rules/layers.js';
import { allowedFolderEdges, findCycle, LAYERS } from '../../eslint-rules/layers-table.js';

const linter = new Linter({ configType: 'flat', cwd: ROOT });

/** The layers rule's messages for `code` as if it were the repository file `file`. */
function lint(file: string, code: string, knownViolations: KnownViolation[] = []): string[] {
  const config: Linter.Config[] = [
    {
      files: ['**/*.ts', '**/*.tsx', '**/*.js'],
      languageOptions: { parser: tseslint.parser as Linter.Parser },
      plugins: { switchyard: layers },
      rules: { 'switchyard/layers': ['error', { knownViolations, listedIn: 'eslint.config.js' }] },
    },
  ];
  const messages = linter.verify(code, config, path.join(ROOT, file));
  expect(messages.filter((m) => m.fatal)).toEqual([]);
  return messages.map((m) => m.message);
}

/** File, specifier, the one message the rule reports. */
const WRONG: Array<[string, string, string]> = [
  [
    'src/observe/flows.ts',
    '../dataplane/ebpf/maps.js',
    'src/observe may not import src/dataplane/ebpf: observe is backend-neutral',
  ],
  [
    'src/dataplane/iptables/render.ts',
    '../../calc/build.js',
    'src/dataplane/iptables may not import src/calc: a backend builds on the IR alone: it imports ir, bpf, netns, util, the contract src/dataplane/*.ts',
  ],
  [
    'src/dataplane/backend.ts',
    '../agent/agent.js',
    'src/dataplane may not import src/agent: agent is a layer above dataplane',
  ],
  [
    'src/util/ip.ts',
    '../model/types.js',
    'src/util may not import src/model: util is a floor folder: it imports nothing of the project but util',
  ],
  [
    'src/netns/setns.ts',
    '../bpf/index.js',
    'src/netns may not import src/bpf: netns is a floor folder: it imports nothing of the project but util',
  ],
  [
    'src/dataplane/ebpf/apply.ts',
    '../iptables/names.js',
    'src/dataplane/ebpf may not import src/dataplane/iptables: a backend never imports another backend',
  ],
  [
    'src/dataplane/ebpf/apply.ts',
    '../netfilter/tables.js',
    'src/dataplane/ebpf may not import src/dataplane/netfilter: src/dataplane/netfilter is the shared kit of the iptables and nftables backends only',
  ],
  [
    'src/dataplane/nftables/apply.ts',
    '../registry.js',
    'src/dataplane/nftables may not import src/dataplane/registry.ts: the registry loads the backends, so a backend never imports it',
  ],
  [
    'src/dataplane/fingerprint.ts',
    './registry.js',
    'src/dataplane may not import src/dataplane/registry.ts: the contract files sit below the backends and the registry above them',
  ],
  [
    'src/cli/lab-conntrack.ts',
    '../dataplane/ebpf/index.js',
    "src/cli may not import src/dataplane/ebpf: a backend's files are its own: use the Backend contract (src/dataplane/backend.ts, registry.ts)",
  ],
  [
    'src/dataplane/registry.ts',
    './ebpf/index.js',
    'src/dataplane/registry.ts may not import src/dataplane/ebpf: the registry loads backends lazily, with import()',
  ],
  [
    'src/datastore/read.ts',
    '../agent/store.js',
    'src/datastore may not import src/agent: agent and datastore share a layer and only agent → datastore is allowed (the etcd source reads the key layout)',
  ],
  [
    'src/console/server.ts',
    '../cli/output.js',
    'src/console may not import src/cli: cli and console share a layer and only cli → console is allowed (`switchyard console` starts the console server)',
  ],
  [
    'src/agent/api.ts',
    '../console/auth.js',
    'src/agent may not import src/console: console is a layer above agent',
  ],
  ['src/agent/run.ts', '../lab/index.js', 'src/agent may not import src/lab: lab is a layer above agent'],
  [
    'src/advise/evidence.ts',
    '../bench/runner.js',
    'src/advise may not import src/bench: bench results are read through src/bench/results.ts',
  ],
  [
    'src/console/server.ts',
    '../bench/runner.js',
    'src/console may not import src/bench: the console reads (and draws) bench results through src/bench/results.ts',
  ],
  [
    'web/pages/flows.tsx',
    '../../src/observe/flows.js',
    'web may not import src/observe: web runs in the browser: it may only `import type` from src/',
  ],
  [
    'src/plugins/x.ts',
    '../util/ip.js',
    'src/plugins may not import src/util: src/plugins is not in the layer table (eslint-rules/layers-table.js, docs/architecture.md)',
  ],
];

/** File, specifier: imports the rule lets pass. */
const ALLOWED: Array<[string, string]> = [
  ['src/observe/flows.ts', '../dataplane/backend.js'],
  ['src/observe/flows.ts', '../bpf/maps.js'],
  ['src/dataplane/ebpf/apply.ts', '../../bpf/maps.js'],
  ['src/dataplane/ebpf/apply.ts', '../backend.js'],
  ['src/dataplane/ebpf/apply.ts', '../../ir/types.js'],
  ['src/dataplane/ebpf/apply.ts', './layout.js'],
  ['src/dataplane/nftables/apply.ts', '../netfilter/tables.js'],
  ['src/dataplane/iptables/apply.ts', '../exec.js'],
  ['src/bench/scenarios/policy.ts', '../../dataplane/ebpf/program.js'],
  ['src/agent/etcd-source.ts', '../datastore/keys.js'],
  ['src/cli/console.ts', '../console/server.js'],
  ['src/advise/evidence.ts', '../bench/results.js'],
  ['src/console/server.ts', '../bench/results.js'],
  ['src/lab/agents.ts', '../agent/run.js'],
  ['src/calc/build.ts', '../ir/types.js'],
  ['src/model/loader.ts', '../util/ip.js'],
  ['src/bpf/maps.ts', '../util/ip.js'],
  ['src/bpf/sys.ts', '../netns/libc.js'],
  ['src/netns/run.ts', '../util/stats.js'],
  ['test/unit/x.test.ts', '../../src/dataplane/ebpf/maps.js'],
  ['src/calc/build.ts', 'zod'],
  ['src/calc/build.ts', 'node:fs'],
];

const importOf = (spec: string): string => `import { x } from '${spec}';\nexport const y = x;\n`;

describe('layers lint: wrong imports fail', () => {
  it.each(WRONG)('%s → %s', (file, spec, message) => {
    expect(lint(file, importOf(spec))).toEqual([message]);
  });

  it('checks re-exports, import(), template literals and `typeof import()` as well as imports', () => {
    const up = 'src/ir/types.ts';
    expect(lint(up, `export * from '../calc/build.js';`)).toHaveLength(1);
    expect(lint(up, `export { buildIR } from '../calc/build.js';`)).toHaveLength(1);
    expect(lint(up, `export const f = () => import('../calc/build.js');`)).toHaveLength(1);
    expect(lint(up, 'export const f = () => import(`../calc/build.js`);')).toHaveLength(1);
    expect(lint(up, `export type T = typeof import('../calc/build.js');`)).toHaveLength(1);
    expect(lint(up, `import type { IR } from '../calc/build.js';\nexport type T = IR;`)).toHaveLength(1);
  });

  it('refuses a value import from web into src even when other names are types', () => {
    expect(
      lint('web/api.ts', `import { type A, b } from '../src/observe/flows.js';\nexport const c: A = b;`),
    ).toHaveLength(1);
  });
});

describe('layers lint: allowed imports pass', () => {
  it.each(ALLOWED)('%s → %s', (file, spec) => {
    expect(lint(file, importOf(spec))).toEqual([]);
  });

  it('lets the registry load a backend index with import(), and web import types from src', () => {
    const registry = `export const load = async () => (await import('./ebpf/index.js')).createEbpfBackend;`;
    expect(lint('src/dataplane/registry.ts', registry)).toEqual([]);
    expect(
      lint('web/api.ts', `import type { Flow } from '../src/observe/flows.js';\nexport type F = Flow;`),
    ).toEqual([]);
    expect(
      lint('web/api.ts', `import { type Flow } from '../src/observe/flows.js';\nexport type F = Flow;`),
    ).toEqual([]);
    expect(lint('web/api.ts', `export type { Flow } from '../src/observe/flows.js';`)).toEqual([]);
  });
});

describe('layers lint: known violations', () => {
  const known = { file: 'src/observe/flows.ts', import: '../dataplane/ebpf/maps.js' };

  it('lets a listed violation pass', () => {
    expect(lint(known.file, importOf(known.import), [known])).toEqual([]);
  });

  it('reports an entry that no longer matches a violation, so the list only shrinks', () => {
    expect(lint(known.file, importOf('../dataplane/backend.js'), [known])).toEqual([
      'stale KNOWN_VIOLATIONS entry src/observe/flows.ts → ../dataplane/ebpf/maps.js: that import is gone or allowed now; delete the entry from eslint.config.js',
    ]);
  });

  it('reports, in the config file that lists them, an entry whose file is gone', () => {
    const gone = { file: 'src/observe/no-such-file.ts', import: '../dataplane/ebpf/maps.js' };
    expect(lint('eslint.config.js', 'export default [];', [known, gone])).toEqual([
      'stale KNOWN_VIOLATIONS entry src/observe/no-such-file.ts → ../dataplane/ebpf/maps.js: src/observe/no-such-file.ts no longer exists; delete the entry',
    ]);
  });
});

describe('layer table', () => {
  it('places every folder under src/', () => {
    const folders = readdirSync(path.join(ROOT, 'src'), { withFileTypes: true }).filter((d) =>
      d.isDirectory(),
    );
    expect(folders.map((d) => d.name).filter((name) => !LAYERS.flat().includes(name))).toEqual([]);
  });

  it('allows no folder-level import cycle', () => {
    const edges = allowedFolderEdges(['ebpf', 'iptables', 'nftables', 'netfilter']);
    expect(edges).toContainEqual(['agent', 'datastore']);
    expect(edges).toContainEqual(['src/dataplane/registry.ts', 'dataplane/ebpf']);
    expect(edges).toContainEqual(['dataplane/ebpf', 'dataplane']);
    expect(edges).not.toContainEqual(['dataplane', 'dataplane/ebpf']);
    expect(edges).toContainEqual(['dataplane/nftables', 'dataplane/netfilter']);
    expect(edges).not.toContainEqual(['datastore', 'agent']);
    expect(edges).not.toContainEqual(['observe', 'dataplane/ebpf']);
    expect(findCycle(edges)).toBeNull();
  });

  it('finds a cycle when there is one', () => {
    expect(
      findCycle([
        ['a', 'b'],
        ['b', 'c'],
        ['c', 'a'],
      ]),
    ).toEqual(['a', 'b', 'c', 'a']);
  });
});
