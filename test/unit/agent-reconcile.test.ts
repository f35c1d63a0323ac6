/**
 * Agent: start (adopt / incremental / full), changes from the source, drift repair, errors, stop
 * and uninstall — with a fake backend and fake kernel access, and a DirectorySource over a
 * temporary directory holding a desired.json.
 */
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import type { DesiredSource } from '../../src/agent/desired.js';
import { DirectorySource } from '../../src/agent/dir-source.js';
import { appliedPath, readApplied } from '../../src/agent/store.js';
import {
  ApplyError,
  inconsistentFingerprint,
  type ApplyResult,
  type Backend,
  type NodeTarget,
} from '../../src/dataplane/backend.js';
import type { IrChange } from '../../src/ir/delta.js';
import type { IR } from '../../src/ir/types.js';
import { modelOf, namespace, networkPolicy, pod, type Manifest, compileIR } from '../support/manifests.js';

const TARGET: NodeTarget = { scope: 'unit', node: 'node-2', netns: 'unit-node-2' };

/** shop/web on node-1, shop/db on node-2; with a port, db takes ingress from web on it only. */
function irFor(port?: number, extra: Manifest[] = []): IR {
  return compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-1' }),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-2' }),
      ...(port === undefined
        ? []
        : [
            networkPolicy('shop', 'db-allow-web', {
              podSelector: { matchLabels: { app: 'db' } },
              ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port }] }],
            }),
          ]),
      ...extra,
    ]),
  );
}

interface ApplyCall {
  ir: IR;
  previous: IR | undefined;
}

/** The policy half of the driver: what it was asked to apply. */
class FakeBackend implements Pick<
  Backend,
  'name' | 'render' | 'apply' | 'dropShadow' | 'remove' | 'counters'
> {
  readonly name = 'nftables' as const;
  readonly applies: ApplyCall[] = [];
  removes = 0;
  /** What happened, in order: `apply` and `drop` (of the shadow). */
  readonly calls: string[] = [];
  failWith: string | undefined;
  /** The failure is one the same input repeats (a verifier rejection, a capacity limit). */
  deterministic = false;
  /** How long an apply takes (a repair at 10k endpoints: seconds). */
  applyMs = 0;

  render(_ir: IR, node: string) {
    return { backend: this.name, node, text: '' };
  }

  async apply(_target: NodeTarget, ir: IR, previous?: IR): Promise<ApplyResult> {
    this.applies.push({ ir, previous });
    this.calls.push('apply');
    if (this.applyMs > 0) await sleep(this.applyMs);
    if (this.failWith)
      return Promise.reject(
        this.deterministic
          ? new ApplyError(this.failWith, this.name, undefined, { deterministic: true })
          : new Error(this.failWith),
      );
    return Promise.resolve({ changed: ['table inet switchyard'], durationMs: 1 });
  }

  dropShadow(): void {
    this.calls.push('drop');
  }

  remove(): Promise<void> {
    this.removes++;
    return Promise.resolve();
  }

  counters() {
    return Promise.resolve([]);
  }
}

/** The read-back half: what the kernel looks like; one instance outlives an agent restart. */
class FakeKernel {
  fp = 'fp-1';
  repairsPrepared = 0;
  watchers: (() => void)[] = [];
  watchStops = 0;

  /** Times the kernel was read. */
  reads = 0;

  fingerprint(): Promise<string> {
    this.reads++;
    return Promise.resolve(this.fp);
  }

  prepareRepair(): Promise<string[]> {
    this.repairsPrepared++;
    return Promise.resolve([]);
  }

  watch(onChange: () => void) {
    this.watchers.push(onChange);
    return Promise.resolve({ stop: () => void this.watchStops++ });
  }
}

const silent = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let sourceDir: string;
let stateDir: string;
const agents: Agent[] = [];

beforeEach(() => {
  sourceDir = mkdtempSync(join(tmpdir(), 'sy-agent-src-'));
  stateDir = mkdtempSync(join(tmpdir(), 'sy-agent-state-'));
});

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  rmSync(sourceDir, { recursive: true, force: true });
  rmSync(stateDir, { recursive: true, force: true });
});

function writeDesired(revision: string, ir: IR): void {
  writeFileSync(join(sourceDir, 'desired.json'), JSON.stringify({ revision, ir }));
}

/** One driver from the two halves, as a real backend is both. */
function driver(backend: FakeBackend, kernel: FakeKernel): Backend {
  return {
    name: backend.name,
    render: (ir, node) => backend.render(ir, node),
    apply: (target, ir, previous) => backend.apply(target, ir, previous),
    dropShadow: () => backend.dropShadow(),
    remove: () => backend.remove(),
    counters: () => backend.counters(),
    fingerprint: () => kernel.fingerprint(),
    prepareRepair: () => kernel.prepareRepair(),
    watchChanges: (_target, onChange) => kernel.watch(onChange),
    driftPollMs: 500,
    flowSource: () => {
      throw new Error('no flows in this test');
    },
    conntrack: () => {
      throw new Error('no conntrack in this test');
    },
    checkSupport: () => Promise.resolve({ supported: true, missing: [] }),
    tamper: () => Promise.resolve(''),
  };
}

function agent(backend: FakeBackend, kernel: FakeKernel, opts: Partial<AgentOptions> = {}): Agent {
  const a = new Agent({
    target: TARGET,
    backend: driver(backend, kernel),
    source: new DirectorySource(sourceDir),
    stateDir,
    logger: silent,
    reconcileMs: 50,
    debounceMs: 30,
    ...opts,
  });
  agents.push(a);
  return a;
}

/** JSON round trip: what applied.json and desired.json hold. */
function plain<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

describe('Agent: start', () => {
  it('applies everything on first start and records it in applied.json', async () => {
    const ir = irFor(5432);
    writeDesired('r1', ir);
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    expect(readApplied(stateDir)).toBeUndefined();
    await a.start();

    expect(backend.applies).toHaveLength(1);
    expect(backend.applies[0]?.ir).toEqual(plain(ir));
    expect(backend.applies[0]?.previous).toBeUndefined();
    expect(kernel.repairsPrepared).toBe(1);
    expect(a.status).toMatchObject({
      node: 'node-2',
      backend: 'nftables',
      netns: 'unit-node-2',
      scope: 'unit',
      source: `dir:${sourceDir}`,
      revision: 'r1',
      desiredRevision: 'r1',
      repairs: 0,
      errors: 0,
      lastApply: { mode: 'full', changed: 1, revision: 'r1' },
    });
    expect(a.status.lastError).toBeUndefined();
    expect(a.appliedIR).toEqual(plain(ir));

    const record = readApplied(stateDir);
    expect(record).toMatchObject({
      version: 1,
      node: 'node-2',
      netns: 'unit-node-2',
      scope: 'unit',
      backend: 'nftables',
      revision: 'r1',
      fingerprint: 'fp-1',
    });
    expect(record?.ir).toEqual(plain(ir));
  });

  it('adopts what a previous agent left when desired state and fingerprint are the same', async () => {
    writeDesired('r1', irFor(5432));
    const first = new FakeBackend();
    const kernel = new FakeKernel();
    const a1 = agent(first, kernel);
    await a1.start();
    await a1.stop();
    expect(first.applies).toHaveLength(1);

    const second = new FakeBackend();
    const a2 = agent(second, kernel);
    await a2.start();
    expect(second.applies).toEqual([]);
    expect(kernel.repairsPrepared).toBe(1);
    expect(a2.status.lastApply).toMatchObject({ mode: 'adopted', revision: 'r1', changed: 0 });
    expect(a2.status.revision).toBe('r1');
    expect(readApplied(stateDir)?.fingerprint).toBe('fp-1');
  });

  it('applies the difference (previous = the recorded IR) when the state changed but the kernel did not', async () => {
    const ir1 = irFor(5432);
    const ir2 = irFor(8080);
    writeDesired('r1', ir1);
    const kernel = new FakeKernel();
    const a1 = agent(new FakeBackend(), kernel);
    await a1.start();
    await a1.stop();

    writeDesired('r2', ir2);
    const backend = new FakeBackend();
    const a2 = agent(backend, kernel);
    await a2.start();
    expect(backend.applies).toHaveLength(1);
    expect(backend.applies[0]?.ir).toEqual(plain(ir2));
    expect(backend.applies[0]?.previous).toEqual(plain(ir1));
    expect(a2.status.lastApply).toMatchObject({ mode: 'incremental', revision: 'r2' });
    expect(kernel.repairsPrepared).toBe(1);
    // applied.json follows once the kernel is read back (the next check).
    await vi.waitFor(() => expect(readApplied(stateDir)).toMatchObject({ revision: 'r2', ir: plain(ir2) }), {
      timeout: 2000,
    });
  });

  it('applies everything when the kernel is not as the previous agent left it', async () => {
    const ir = irFor(5432);
    writeDesired('r1', ir);
    const kernel = new FakeKernel();
    const a1 = agent(new FakeBackend(), kernel);
    await a1.start();
    await a1.stop();

    kernel.fp = 'fp-rebooted';
    const backend = new FakeBackend();
    const a2 = agent(backend, kernel);
    await a2.start();
    expect(backend.applies).toHaveLength(1);
    expect(backend.applies[0]?.previous).toBeUndefined();
    expect(a2.status.lastApply?.mode).toBe('full');
    expect(kernel.repairsPrepared).toBe(2);
    expect(readApplied(stateDir)?.fingerprint).toBe('fp-rebooted');
  });

  it('does not adopt a record of another node', async () => {
    writeDesired('r1', irFor(5432));
    const kernel = new FakeKernel();
    const a1 = agent(new FakeBackend(), kernel, {
      target: { ...TARGET, node: 'node-1', netns: 'unit-node-1' },
    });
    await a1.start();
    await a1.stop();
    const backend = new FakeBackend();
    const a2 = agent(backend, kernel);
    await a2.start();
    expect(backend.applies).toHaveLength(1);
    expect(a2.status.lastApply?.mode).toBe('full');
  });

  it('reports a desired state without its node as a source error and applies nothing', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel(), { target: { ...TARGET, node: 'node-9' } });
    await a.start();
    expect(backend.applies).toEqual([]);
    expect(a.status.lastError).toMatchObject({ stage: 'source' });
    expect(a.status.lastError?.message).toContain('node-9');
    expect(a.status.revision).toBeUndefined();
  });
});

describe('Agent: drift', () => {
  it('repairs a dataplane changed behind it within a few reconcile periods, once', async () => {
    const ir = irFor(5432);
    writeDesired('r1', ir);
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    await a.start();
    await sleep(200);
    // Checks that find the kernel as recorded change nothing.
    expect(backend.applies).toHaveLength(1);
    expect(a.status.repairs).toBe(0);

    kernel.fp = 'fp-tampered';
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000, interval: 10 });
    expect(a.status.lastApply).toMatchObject({ mode: 'repair', revision: 'r1' });
    expect(backend.applies).toHaveLength(2);
    expect(backend.applies[1]?.ir).toEqual(plain(ir));
    expect(backend.applies[1]?.previous).toBeUndefined();
    expect(kernel.repairsPrepared).toBe(2);
    expect(readApplied(stateDir)?.fingerprint).toBe('fp-tampered');

    // The repaired state is the new reference: no further repairs.
    await sleep(300);
    expect(a.status.repairs).toBe(1);
    expect(backend.applies).toHaveLength(2);
  });

  it('looks at its memory after a repair longer than the look that the drift read started', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    await a.start();
    backend.applyMs = 1200;
    kernel.fp = 'fp-tampered';
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 4000, interval: 10 });
    // The read's look (1 s after it) fell inside the repair; the repair's garbage is looked at after.
    expect(a.status.memory?.due).toBe(true);
  });

  it('repairs a change made between its apply and the read-back, which the read-back shows as inconsistent', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    // The tamper lands after the apply, before the fingerprint is read: the baseline holds it.
    const apply = backend.apply.bind(backend);
    backend.apply = async (target, ir, previous) => {
      const r = await apply(target, ir, previous);
      kernel.fp =
        backend.applies.length === 1
          ? inconsistentFingerprint('missing filter/FORWARD->SY-FORWARD', 'fp-x')
          : 'fp-1';
      return r;
    };
    const a = agent(backend, kernel);
    await a.start();
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000, interval: 10 });
    expect(readApplied(stateDir)?.fingerprint).toBe('fp-1');
    await sleep(300);
    expect(a.status.repairs).toBe(1);
  });

  it('does not adopt a recorded state that is inconsistent, and backs off when a repair leaves it so', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    kernel.fp = inconsistentFingerprint('missing filter/FORWARD->SY-FORWARD', 'fp-x');
    const first = agent(backend, kernel);
    await first.start();
    await sleep(400);
    // Every repair leaves the same state: one error, repairs tried again backing off, not per poll.
    expect(first.status.lastError).toMatchObject({ stage: 'drift' });
    expect(first.status.lastError?.message).toContain('missing filter/FORWARD->SY-FORWARD');
    expect(backend.applies.length).toBeLessThanOrEqual(4);
    await first.stop();
    const before = backend.applies.length;
    const second = agent(backend, kernel);
    await second.start();
    expect(backend.applies.length).toBe(before + 1);
    expect(second.status.lastApply?.mode).toBe('full');
  });

  it('reports a failed repair once and tries again backing off, not every poll', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const hooks = { repairs: 0, errors: [] as string[] };
    const a = agent(backend, kernel, {
      hooks: { onRepair: () => hooks.repairs++, onError: (s) => hooks.errors.push(s) },
    });
    await a.start();
    backend.failWith = 'nft: busy';
    kernel.fp = 'fp-tampered';
    const before = backend.applies.length;
    await vi.waitFor(() => expect(backend.applies.length).toBeGreaterThanOrEqual(before + 3), {
      timeout: 2000,
    });
    // Polls every 50 ms, but attempts 250, 500, 1000 ms apart: far fewer than the polls.
    await sleep(600);
    expect(backend.applies.length - before).toBeLessThanOrEqual(5);
    expect(a.status.repairs).toBe(0);
    expect(a.status.lastError).toMatchObject({ stage: 'drift', message: 'nft: busy', revision: 'r1' });
    expect(hooks.errors).toEqual(['drift']);

    backend.failWith = undefined;
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000 });
    expect(hooks.repairs).toBe(1);
    await vi.waitFor(() => expect(a.status.lastError).toBeUndefined(), { timeout: 2000 });
  });

  it("uses the kernel access's change watch: a change event triggers a check before the next period", async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel, { reconcileMs: 60_000 });
    await a.start();
    expect(kernel.watchers).toHaveLength(1);
    // Events right after an apply are taken as the apply's own; a later one is drift.
    for (const w of kernel.watchers) w();
    await sleep(250);
    expect(a.status.repairs).toBe(0);
    kernel.fp = 'fp-tampered';
    for (const w of kernel.watchers) w();
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000 });
    await a.stop();
    expect(kernel.watchStops).toBe(1);
  });
});

describe('Agent: read-back after its own incremental applies', () => {
  it('is in force when the kernel write returns; the kernel is read back once changes pause, and only that goes to applied.json', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel, { reconcileMs: 60_000 });
    await a.start();
    const reads = kernel.reads;

    writeDesired('r2', irFor(8080));
    kernel.fp = 'fp-2'; // what the apply leaves (the fake kernel does not change by itself)
    await a.syncNow();
    expect(a.status.revision).toBe('r2');
    expect(a.status.lastApply).toMatchObject({ mode: 'incremental', revision: 'r2' });
    expect(a.status.lastApply?.phasesMs?.fingerprint).toBe(0);
    // Neither before the apply (the shadow is ours) nor after it.
    expect(kernel.reads).toBe(reads);
    expect(readApplied(stateDir)).toMatchObject({ revision: 'r1', fingerprint: 'fp-1' });
    // The apply's own change events (right after it) do not read the kernel either.
    for (const w of kernel.watchers) w();
    await sleep(400);
    expect(kernel.reads).toBe(reads);

    await vi.waitFor(
      () => expect(readApplied(stateDir)).toMatchObject({ revision: 'r2', fingerprint: 'fp-2' }),
      {
        timeout: 3000,
        interval: 20,
      },
    );
    expect(kernel.reads).toBe(reads + 1);
    expect(a.status.repairs).toBe(0);
    // The read-back is the reference: the kernel as it is needs no repair.
    await sleep(300);
    expect(backend.applies).toHaveLength(2);
  });

  it('repairs, rather than adopts, a kernel changed behind its back while the read-back is due', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel, { reconcileMs: 60_000 });
    await a.start();
    writeDesired('r2', irFor(8080));
    await a.syncNow();
    await sleep(250);
    kernel.fp = 'fp-tampered';
    for (const w of kernel.watchers) w();
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000, interval: 10 });
    expect(a.status.lastApply).toMatchObject({ mode: 'repair', revision: 'r2' });
    expect(backend.applies.at(-1)?.previous).toBeUndefined();
    expect(readApplied(stateDir)).toMatchObject({ revision: 'r2', fingerprint: 'fp-tampered' });
  });

  it('writes what is in force to applied.json on stop, for the next agent to adopt', async () => {
    writeDesired('r1', irFor(5432));
    const kernel = new FakeKernel();
    const a1 = agent(new FakeBackend(), kernel, { reconcileMs: 60_000 });
    await a1.start();
    writeDesired('r2', irFor(8080));
    kernel.fp = 'fp-2';
    await a1.syncNow();
    await a1.stop();
    expect(readApplied(stateDir)).toMatchObject({ revision: 'r2', fingerprint: 'fp-2' });
    const second = new FakeBackend();
    const a2 = agent(second, kernel);
    await a2.start();
    expect(second.applies).toEqual([]);
    expect(a2.status.lastApply).toMatchObject({ mode: 'adopted', revision: 'r2', changed: 0 });
  });
});

describe('Agent: changes and errors', () => {
  it('picks up a new desired.json through the watch, debounced into one incremental apply', async () => {
    const ir1 = irFor(5432);
    writeDesired('r1', ir1);
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel(), { debounceMs: 250 });
    await a.start();
    expect(backend.applies).toHaveLength(1);

    // Writes closer together than the debounce period: only the last one is applied.
    writeDesired('r2', irFor(1001));
    await sleep(40);
    writeDesired('r3', irFor(1002));
    await sleep(40);
    const ir4 = irFor(1003);
    writeDesired('r4', ir4);
    await vi.waitFor(() => expect(a.status.revision).toBe('r4'), { timeout: 3000, interval: 10 });
    // Wait out the polling fallback too: it may call back again, but nothing is left to apply.
    await sleep(1200);
    expect(backend.applies).toHaveLength(2);
    expect(backend.applies[1]?.ir).toEqual(plain(ir4));
    expect(backend.applies[1]?.previous).toEqual(plain(ir1));
    expect(a.status.lastApply).toMatchObject({ mode: 'incremental', revision: 'r4' });
    expect(readApplied(stateDir)?.revision).toBe('r4');
  });

  it('keeps the desired state without the source change once it is applied: the change holds the IR it started from', async () => {
    writeDesired('r1', irFor(5432));
    const inner = new DirectorySource(sourceDir);
    let handedOut: IR | undefined;
    const delta = (): IrChange['delta'] => ({
      endpoints: { added: [], changed: [], removed: [] },
      ipSets: { added: [], changed: [], removed: [] },
      ipPortSets: { added: [], changed: [], removed: [] },
      ruleSets: { added: [], changed: [], removed: [] },
      services: { added: [], changed: [], removed: [] },
      prefilters: { added: [], changed: [], removed: [] },
      nodes: false,
    });
    // A source that hands its changes on, as the manifest calculation does.
    const source: DesiredSource = {
      description: inner.description,
      watch: (onChange) => inner.watch(onChange),
      read: async () => {
        const desired = await inner.read();
        const from = handedOut;
        handedOut = desired.ir;
        return from ? { ...desired, change: { from, delta: delta(), services: new Map() } } : desired;
      },
    };
    const a = agent(new FakeBackend(), new FakeKernel(), { source });
    await a.start();
    writeDesired('r2', irFor(8080));
    await vi.waitFor(
      () => expect(a.status.lastApply).toMatchObject({ mode: 'incremental', revision: 'r2' }),
      {
        timeout: 3000,
        interval: 10,
      },
    );
    expect(a.desiredState?.revision).toBe('r2');
    expect(a.desiredState?.ir).toEqual(plain(irFor(8080)));
    expect(a.desiredState?.change).toBeUndefined();
  });

  it('applies a state renamed into place after a quiet period at once, and coalesces the burst after it', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    // A debounce far longer than the wait below: only the quiet-period path can be this quick.
    const a = agent(backend, new FakeKernel(), { debounceMs: 1500 });
    await a.start();
    await sleep(1600);
    const renamed = (revision: string, ir: IR): void => {
      writeFileSync(join(sourceDir, 'desired.json.tmp'), JSON.stringify({ revision, ir }));
      renameSync(join(sourceDir, 'desired.json.tmp'), join(sourceDir, 'desired.json'));
    };
    const started = performance.now();
    renamed('r2', irFor(1001));
    await vi.waitFor(() => expect(a.status.revision).toBe('r2'), { timeout: 1000, interval: 5 });
    expect(performance.now() - started).toBeLessThan(1000);
    // More while the source is busy: waits out the debounce, and only the last one is applied.
    renamed('r3', irFor(1002));
    renamed('r4', irFor(1003));
    await vi.waitFor(() => expect(a.status.revision).toBe('r4'), { timeout: 5000, interval: 10 });
    expect(backend.applies.map((x) => x.previous !== undefined)).toEqual([false, true, true]);
    expect(backend.applies[2]?.ir).toEqual(plain(irFor(1003)));
  });

  it('records a new revision of the same state without applying', async () => {
    const ir = irFor(5432);
    writeDesired('r1', ir);
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel());
    await a.start();
    writeDesired('r1b', ir);
    await a.syncNow();
    expect(a.status.revision).toBe('r1b');
    expect(backend.applies).toHaveLength(1);
    expect(readApplied(stateDir)?.revision).toBe('r1b');
  });

  it('keeps the previous state in force when an apply fails, reports it, and the next good revision clears it', async () => {
    const ir1 = irFor(5432);
    writeDesired('r1', ir1);
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel());
    await a.start();

    backend.failWith = 'nft: syntax error';
    writeDesired('r2', irFor(8080));
    await a.syncNow();
    expect(a.status.lastError).toMatchObject({
      stage: 'apply',
      revision: 'r2',
      message: 'nft: syntax error',
    });
    expect(a.status.revision).toBe('r1');
    expect(a.status.desiredRevision).toBe('r2');
    expect(a.status.errors).toBeGreaterThanOrEqual(1);
    expect(a.status.lastApply).toMatchObject({ mode: 'full', revision: 'r1' });
    expect(a.appliedIR).toEqual(plain(ir1));
    expect(readApplied(stateDir)?.revision).toBe('r1');

    backend.failWith = undefined;
    const ir3 = irFor(9090);
    writeDesired('r3', ir3);
    await a.syncNow();
    expect(a.status.lastError).toBeUndefined();
    expect(a.status.revision).toBe('r3');
    expect(a.status.lastApply).toMatchObject({ mode: 'incremental', revision: 'r3' });
    expect(backend.applies.at(-1)?.previous).toEqual(plain(ir1));
    await vi.waitFor(() => expect(readApplied(stateDir)?.revision).toBe('r3'), { timeout: 2000 });
  });

  it("drops the backend's shadow before a full apply, a repair and after a failed apply, never for an incremental one", async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    await a.start();
    expect(backend.calls).toEqual(['drop', 'apply']);

    writeDesired('r2', irFor(8080));
    await a.syncNow();
    expect(backend.calls.slice(2)).toEqual(['apply']);

    backend.failWith = 'nft: syntax error';
    writeDesired('r3', irFor(9090));
    await a.syncNow();
    expect(backend.calls.slice(3)).toEqual(['apply', 'drop']);
    backend.failWith = undefined;
    await a.syncNow();

    const before = backend.calls.length;
    kernel.fp = 'fp-tampered';
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000, interval: 10 });
    expect(backend.calls.slice(before)).toEqual(['drop', 'apply']);
  });

  it('reports a deterministic failure once and does not retry it until the revision changes', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const errors: string[] = [];
    const a = agent(backend, new FakeKernel(), { hooks: { onError: (s) => errors.push(s) } });
    await a.start();

    backend.failWith = 'eBPF: the verifier rejected the ingress program of shop/db';
    backend.deterministic = true;
    writeDesired('r2', irFor(8080));
    await vi.waitFor(() => expect(a.status.desiredRevision).toBe('r2'), { timeout: 2000 });
    const attempts = backend.applies.length;
    // Touching the source, asking for a sync and waiting past every backoff step change nothing.
    writeDesired('r2', irFor(8080));
    await a.syncNow();
    await sleep(800);
    expect(backend.applies.length).toBe(attempts);
    expect(errors).toEqual(['apply']);
    expect(a.status.errors).toBe(1);
    expect(a.status.lastError).toMatchObject({ stage: 'apply', revision: 'r2', retry: 'on-change' });
    expect(a.status.revision).toBe('r1');

    backend.failWith = undefined;
    writeDesired('r3', irFor(9090));
    await vi.waitFor(() => expect(a.status.revision).toBe('r3'), { timeout: 2000 });
    expect(a.status.lastError).toBeUndefined();
  });

  it('logs a transient failure that repeats once, and keeps backing off', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const errors: string[] = [];
    const a = agent(backend, new FakeKernel(), { hooks: { onError: (s) => errors.push(s) } });
    await a.start();
    backend.failWith = 'host interfaces missing: syabc (shop/db)';
    writeDesired('r2', irFor(8080));
    await vi.waitFor(() => expect(backend.applies.length).toBeGreaterThanOrEqual(4), { timeout: 3000 });
    expect(errors).toEqual(['apply']);
    expect(a.status.errors).toBe(1);
    expect(a.status.lastError).toMatchObject({ revision: 'r2', retry: 'backoff' });
  });

  it('does not repeat a deterministic repair failure until the kernel changes again', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    await a.start();
    backend.failWith = 'map full';
    backend.deterministic = true;
    kernel.fp = 'fp-tampered';
    await vi.waitFor(() => expect(a.status.lastError?.stage).toBe('drift'), { timeout: 2000 });
    const attempts = backend.applies.length;
    await sleep(700);
    expect(backend.applies.length).toBe(attempts);
    backend.failWith = undefined;
    kernel.fp = 'fp-tampered-again';
    await vi.waitFor(() => expect(a.status.repairs).toBe(1), { timeout: 2000 });
  });

  it('reports a failed first apply without a revision in force', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    backend.failWith = 'no nft binary';
    const a = agent(backend, new FakeKernel(), { reconcileMs: 60_000 });
    await a.start();
    expect(a.status.revision).toBeUndefined();
    expect(a.status.lastError).toMatchObject({ stage: 'apply', revision: 'r1', message: 'no nft binary' });
    expect(readApplied(stateDir)).toBeUndefined();
  });

  it('reports an unreadable source as a source error and keeps the state in force', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel());
    await a.start();
    writeFileSync(join(sourceDir, 'desired.json'), '{ broken');
    await a.syncNow();
    expect(a.status.lastError).toMatchObject({ stage: 'source' });
    expect(a.status.lastError?.message).toContain('desired.json');
    expect(a.status.revision).toBe('r1');
    expect(backend.applies).toHaveLength(1);
  });

  it('calls the hooks with the mode and the desired state applied', async () => {
    writeDesired('r1', irFor(5432));
    const applied: [string, string][] = [];
    const a = agent(new FakeBackend(), new FakeKernel(), {
      hooks: { onApplied: (mode, seconds, desired) => applied.push([mode, desired.revision]) },
    });
    await a.start();
    writeDesired('r2', irFor(8080));
    await a.syncNow();
    expect(applied).toEqual([
      ['full', 'r1'],
      ['incremental', 'r2'],
    ]);
  });
});

describe('Agent: stop and uninstall', () => {
  it('stop() stops watching and checking: no applies or repairs after it', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const kernel = new FakeKernel();
    const a = agent(backend, kernel);
    await a.start();
    await a.stop();
    writeDesired('r2', irFor(8080));
    kernel.fp = 'fp-tampered';
    await sleep(1300);
    expect(backend.applies).toHaveLength(1);
    expect(a.status.repairs).toBe(0);
    expect(a.status.revision).toBe('r1');
    expect(backend.removes).toBe(0);
    // The dataplane stays in force, and so does its record.
    expect(readApplied(stateDir)?.revision).toBe('r1');
  });

  it('uninstall() removes the dataplane and the record', async () => {
    writeDesired('r1', irFor(5432));
    const backend = new FakeBackend();
    const a = agent(backend, new FakeKernel());
    await a.start();
    expect(existsSync(appliedPath(stateDir))).toBe(true);
    await a.uninstall();
    expect(backend.removes).toBe(1);
    expect(existsSync(appliedPath(stateDir))).toBe(false);
    expect(readApplied(stateDir)).toBeUndefined();
    expect(a.appliedIR).toBeUndefined();

    // A later agent starts from scratch.
    const next = new FakeBackend();
    const a2 = agent(next, new FakeKernel());
    await a2.start();
    expect(next.applies).toHaveLength(1);
    expect(a2.status.lastApply?.mode).toBe('full');
  });
});
