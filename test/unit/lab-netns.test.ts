import { describe, expect, it } from 'vitest';
import {
  cgroup2Mount,
  describeFailures,
  inNetnsArgv,
  PrerequisiteError,
  requireTool,
  runPool,
} from '../../src/netns/index.js';

describe('netns helpers', () => {
  it('pairs each failing batch line with what the kernel said', () => {
    const lines = [
      'link set lo up',
      'link add x type veth peer name eth0 netns sy-a',
      'route add 1.2.3.4 dev x',
    ];
    const stderr =
      'RTNETLINK answers: File exists\nCommand failed -:2\nCannot find device "x"\nCommand failed -:3\n';
    expect(describeFailures(stderr, lines)).toEqual([
      "'link add x type veth peer name eth0 netns sy-a': RTNETLINK answers: File exists",
      '\'route add 1.2.3.4 dev x\': Cannot find device "x"',
    ]);
  });

  it('finds the cgroup2 mount in hybrid and unified layouts', () => {
    const hybrid =
      'cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n';
    expect(cgroup2Mount(hybrid)).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2Mount('cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n')).toBe('/sys/fs/cgroup');
    expect(() => cgroup2Mount('proc /proc proc rw 0 0\n')).toThrow(PrerequisiteError);
  });

  it('names the Debian package of a missing tool', () => {
    expect(() => requireTool('definitely-not-a-tool-sy')).toThrow(/not installed/);
  });

  it('joins the cgroup before entering the namespace, then execs the command', () => {
    const argv = inNetnsArgv({
      netns: 'sy-demo-x-a',
      cgroup: '/cg/switchyard/demo/x-a',
      argv: ['ip', 'addr'],
    });
    expect(argv.slice(3)).toEqual([
      'sh',
      '/cg/switchyard/demo/x-a',
      expect.stringMatching(/nsenter$/),
      '--net=/run/netns/sy-demo-x-a',
      '--',
      'ip',
      'addr',
    ]);
  });

  it('runs a bounded pool and keeps result order', async () => {
    let inFlight = 0;
    let peak = 0;
    const out = await runPool([5, 1, 4, 2, 3], 2, async (n) => {
      peak = Math.max(peak, ++inFlight);
      await new Promise((r) => setTimeout(r, n));
      inFlight--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30]);
    expect(peak).toBe(2);
  });
});
