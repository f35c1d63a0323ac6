/**
 * The netfilter tools run inside the node's namespace (exec.ts spawns them from a thread that has
 * entered it, no `ip netns exec`): the tool sees the node's namespace, the agent's own thread is
 * back in its namespace afterwards, a missing namespace reads as `ip netns exec` said it, and a
 * name outside the project is refused.
 */
import { readlinkSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readLinesInNetns, runInNetns, ToolError } from '../../src/dataplane/exec.js';
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

  it('hands a long output line by line as it comes, multi-byte characters cut by pipe chunks included', async () => {
    // 200,000 lines of 14 bytes (2.8 MB: many pipe reads), each with a two-byte character, and a
    // last line without a newline.
    const script = `awk 'BEGIN { for (i = 0; i < 200000; i++) printf "é line %06d\\n", i; printf "tail" }'`;
    const lines: string[] = [];
    await readLinesInNetns(NETNS, 'sh', ['-c', script], (l) => lines.push(l));
    expect(lines).toHaveLength(200_001);
    expect(lines[0]).toBe('é line 000000');
    expect(lines[123_456]).toBe('é line 123456');
    expect(lines.at(-1)).toBe('tail');
    expect(lines.every((l, i) => i === 200_000 || l === `é line ${String(i).padStart(6, '0')}`)).toBe(true);
    await expect(
      readLinesInNetns(NETNS, 'sh', ['-c', 'echo out; echo bad >&2; exit 4'], () => undefined),
    ).rejects.toThrow(ToolError);
  });

  it('answers a missing namespace as ip netns exec did, and refuses names outside the project', async () => {
    const r = await runInNetns(`${NETNS}-gone`, 'true', []);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file or directory/);
    await expect(runInNetns('', 'true', [])).rejects.toThrow(/outside a project namespace/);
    await expect(runInNetns(NETNS, 'no-such-tool-here', [])).rejects.toThrow(/not found/);
  });
});
