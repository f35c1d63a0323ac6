/**
 * A `lab up` or `lab apply` killed half-way (SIGKILL: no chance to clean up) leaves a lab that
 * `lab up` rebuilds and `lab down --all` removes completely.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readState } from '../../src/lab/state.js';
import { namespace, pod } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import {
  allTrue,
  cli,
  cliOk,
  leftovers,
  manifestFile,
  netnsOf,
  NOTHING_LEFT,
  startCli,
  type Matrix,
} from './lab-harness.js';

const LAB = 't-lab3';

function manyPods(count: number): string {
  const namespaces = ['p', 'q', 'r', 's'];
  return manifestFile([
    ...namespaces.map((n) => namespace(n)),
    ...Array.from({ length: count }, (_, i) =>
      pod(namespaces[i % 4] as string, `w${i}`, { labels: { app: 'w' } }),
    ),
  ]);
}

/** Starts the CLI and SIGKILLs it once `ready()` holds: mid-way through its kernel work. */
async function killWhen(args: string[], ready: () => boolean): Promise<void> {
  const child = startCli(args);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error('the CLI never reached the point to kill it at');
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill('SIGKILL');
  await exited;
}

describeKernel('lab: recovering from a killed run', () => {
  beforeAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  });

  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  });

  it('lab up killed half-way is rebuilt by the next lab up', async () => {
    const file = manyPods(60);
    // Pods' namespaces exist, but the run has not finished wiring them.
    await killWhen(['lab', 'up', file, '--name', LAB], () => netnsOf(LAB).length > 5);
    expect(readState(LAB)?.status).toBe('creating');
    expect(leftovers(LAB).netns.length).toBeGreaterThan(0);

    const out = await cliOk(['lab', 'up', file, '--name', LAB]);
    expect(out).toMatch(/rebuilt an interrupted lab/);
    expect(readState(LAB)?.status).toBe('ready');
    // Pods, fabric, two nodes and the outside client.
    expect(netnsOf(LAB)).toHaveLength(60 + 3 + 1);
    const m = JSON.parse(await cliOk(['lab', 'reach', '--name', LAB, '--json', '--from', 'p/w0,s/w59'])) as {
      results: Matrix;
    };
    expect(Object.keys(m.results)).toEqual(['p/w0', 's/w59']);
    expect(allTrue(m.results)).toBe(true);
  });

  it('lab apply killed half-way is removed completely by lab down --all', async () => {
    const bigger = manyPods(200);
    await killWhen(['lab', 'apply', bigger, '--name', LAB], () => netnsOf(LAB).length > 64 + 5);
    expect(readState(LAB)?.status).toBe('applying');
    // --all removes every lab on the machine. CI runs kernel tests one file at a time; on a shared
    // development machine other people's labs may be up (or come up meanwhile), so there the lab is
    // removed by name.
    const down = process.env.CI === 'true' ? ['--all', '--yes'] : ['--lab', LAB];
    const out = await cliOk(['lab', 'down', ...down]);
    expect(out).toMatch(new RegExp(`lab ${LAB}: removed \\d+ namespaces`));
    expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
  });
});
