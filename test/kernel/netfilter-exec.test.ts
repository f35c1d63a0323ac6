/**
 * The netfilter tools run inside the node's namespace (exec.ts spawns them from a thread that has
 * entered it, no `ip netns exec`): the tool sees the node's namespace, the agent's own thread is
 * back in its namespace afterwards, a missing namespace reads as `ip netns exec` said it, and a
 * name outside the project is refused.
 */
import { readlinkSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runInNetns } from '../../src/dataplane/exec.js';
import { createNetns, deleteNetns } from '../../src/netns/namespaces.js';
import { describeKernel } from '../support/kernel.js';

const NETNS = `sy-anf-exec-${process.pid}`;

describeKernel('netfilter tools run in the node namespace', () => {
  beforeAll(async () => createNetns([NETNS]));
  afterAll(async () => deleteNetns([NETNS]));

  it('runs the tool in the namespace and leaves the calling thread where it was', async () => {
    const home = readlinkSync('/proc/thread-self/ns/net');
    const r = await runInNetns(NETNS, 'readlink', ['/proc/self/ns/net']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^net:\[\d+\]$/);
    expect(r.stdout.trim()).not.toBe(home);
    expect(readlinkSync('/proc/thread-self/ns/net')).toBe(home);
    // The namespace's own loopback, down as a new namespace has it (the root's is up).
    const link = await runInNetns(NETNS, 'ip', ['-o', 'link', 'show', 'lo']);
    expect(link.stdout).toContain('state DOWN');
  });

  it('feeds stdin and reports the exit code', async () => {
    const r = await runInNetns(NETNS, 'sh', ['-c', 'cat; exit 3'], 'hello\n');
    expect(r).toMatchObject({ code: 3, stdout: 'hello\n' });
  });

  it('answers a missing namespace as ip netns exec did, and refuses names outside the project', async () => {
    const r = await runInNetns(`${NETNS}-gone`, 'true', []);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file or directory/);
    await expect(runInNetns('', 'true', [])).rejects.toThrow(/outside a project namespace/);
    await expect(runInNetns(NETNS, 'no-such-tool-here', [])).rejects.toThrow(/not found/);
  });
});
