/** The one rule every command uses to pick a lab (docs/cli.md), with the labs on "the machine" faked. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const machine = vi.hoisted(() => ({ labs: [] as string[], clusters: new Set<string>() }));

vi.mock('../../src/lab/state.js', () => ({
  stateLabs: () => [...machine.labs].sort(),
  readState: (name: string) =>
    machine.labs.includes(name)
      ? { name, ...(machine.clusters.has(name) ? { cluster: { etcd: 'x' } } : {}) }
      : undefined,
}));

const { chooseLab, LAB_ENV } = await import('../../src/cli/lab-choice.js');
const { CliError } = await import('../../src/cli/output.js');

function failure(f: () => unknown): { code: string; exitCode: number; message: string; details: object } {
  try {
    f();
  } catch (e) {
    if (e instanceof CliError)
      return { code: e.code, exitCode: e.exitCode, message: e.message, details: e.details };
    throw e;
  }
  throw new Error('expected a CliError');
}

describe('lab choice', () => {
  beforeEach(() => {
    machine.labs = [];
    machine.clusters = new Set();
    delete process.env[LAB_ENV];
  });
  afterEach(() => {
    delete process.env[LAB_ENV];
  });

  it('takes --lab, and --name as its old spelling', () => {
    machine.labs = ['a', 'b'];
    expect(chooseLab({ lab: 'b' })).toBe('b');
    expect(chooseLab({ name: 'a' })).toBe('a');
    expect(chooseLab({ lab: 'a', name: 'a' })).toBe('a');
    expect(failure(() => chooseLab({ lab: 'a', name: 'b' }))).toMatchObject({
      code: 'conflicting-options',
      exitCode: 2,
    });
  });

  it('a lab that is not up is an error naming the labs that are', () => {
    machine.labs = ['a', 'b'];
    const f = failure(() => chooseLab({ lab: 'x' }));
    expect(f).toMatchObject({ code: 'lab-not-found', exitCode: 1, details: { lab: 'x', labs: ['a', 'b'] } });
    expect(f.message).toBe("lab 'x' is not up (--lab); labs up: a, b — choose one with --lab");
  });

  it('an invalid name is a usage error', () => {
    expect(failure(() => chooseLab({ lab: 'Not_A_Lab' }))).toMatchObject({
      code: 'invalid-lab-name',
      exitCode: 2,
    });
  });

  it('takes $SWITCHYARD_LAB when no flag names a lab; a flag wins', () => {
    machine.labs = ['a', 'b'];
    process.env[LAB_ENV] = 'b';
    expect(chooseLab({})).toBe('b');
    expect(chooseLab({ lab: 'a' })).toBe('a');
    process.env[LAB_ENV] = 'gone';
    expect(failure(() => chooseLab({})).message).toMatch(
      /^lab 'gone' is not up \(\$SWITCHYARD_LAB\); labs up: a, b/,
    );
  });

  it('defaults only when exactly one lab exists', () => {
    machine.labs = ['only'];
    expect(chooseLab({})).toBe('only');
    machine.labs = ['a', 'b'];
    expect(failure(() => chooseLab({}))).toMatchObject({
      code: 'lab-ambiguous',
      exitCode: 2,
      details: { labs: ['a', 'b'] },
    });
    machine.labs = [];
    expect(failure(() => chooseLab({}))).toMatchObject({ code: 'no-lab', exitCode: 1 });
  });

  it('lab up creates demo when no lab exists, converges the only one, never defaults to a cluster', () => {
    expect(chooseLab({}, { create: 'demo' })).toBe('demo');
    expect(chooseLab({ lab: 'new' }, { create: 'demo' })).toBe('new');
    machine.labs = ['mine'];
    expect(chooseLab({}, { create: 'demo' })).toBe('mine');
    machine.labs = ['mine', 'cluster'];
    machine.clusters = new Set(['cluster']);
    expect(chooseLab({}, { create: 'demo' })).toBe('mine');
    machine.labs = ['cluster'];
    expect(chooseLab({}, { create: 'demo' })).toBe('demo');
  });

  it('cluster commands default to the only cluster lab', () => {
    machine.labs = ['plain', 'c1'];
    machine.clusters = new Set(['c1']);
    expect(chooseLab({}, { clusters: true })).toBe('c1');
    expect(chooseLab({}, { clusters: true, create: 'cluster' })).toBe('c1');
    machine.clusters = new Set(['c1', 'plain']);
    expect(failure(() => chooseLab({}, { clusters: true }))).toMatchObject({ code: 'lab-ambiguous' });
    machine.clusters = new Set();
    expect(chooseLab({}, { clusters: true, create: 'cluster' })).toBe('cluster');
    expect(failure(() => chooseLab({}, { clusters: true })).message).toMatch(
      /^no cluster is up \(labs up: c1, plain\)/,
    );
  });
});

describe('destructive --all', () => {
  it('refuses without a terminal unless --yes', async () => {
    const { confirmDestructive } = await import('../../src/cli/confirm.js');
    const tty = process.stdin.isTTY;
    Object.defineProperty(process.stdin, 'isTTY', { value: undefined, configurable: true });
    try {
      await expect(confirmDestructive('remove all 2 labs', {})).rejects.toMatchObject({
        code: 'confirmation-required',
        exitCode: 2,
      });
      await expect(confirmDestructive('remove all 2 labs', { yes: true })).resolves.toBeUndefined();
    } finally {
      Object.defineProperty(process.stdin, 'isTTY', { value: tty, configurable: true });
    }
  });
});
