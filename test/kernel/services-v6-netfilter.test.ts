/**
 * Issue 19: IPv6 Services through the netfilter backends, in a real lab whose pods are dual-stack.
 * x/a probes a RequireDualStack service over three backends with `lab probe`'s library, on its
 * IPv6 cluster IP (from its IPv6 address) and on its IPv4 one in the same lab: the spread covers
 * every backend on both, ClientIP affinity holds on both, a service without endpoints and an
 * undefined port of the IPv6 cluster IP are refused, and a SingleStack IPv4 service has no IPv6
 * cluster IP at all.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { converge, labDown, probeService, type LabState } from '../../src/lab/index.js';
import { describeKernel } from '../support/kernel.js';
import { modelOf, namespace, pod, service, type Manifest } from '../support/manifests.js';

/** Chi-square critical value for df = 2 at p = 0.001. */
const CHI2_CRITICAL_DF2 = 13.8155;
const BACKENDS = ['x/b1', 'x/b2', 'x/b3'];
const DUAL = { ipFamilyPolicy: 'RequireDualStack' };

function chiSquare(observed: readonly number[], total: number): number {
  const expected = total / observed.length;
  return observed.reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
}

function manifests(): Manifest[] {
  const ports = [
    { name: 'http', containerPort: 8080 },
    { name: 'dns', containerPort: 5353, protocol: 'UDP' as const },
  ];
  return [
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { role: 'client' } }),
    ...['b1', 'b2', 'b3'].map((b) => pod('x', b, { labels: { app: 'web' }, ports })),
    service('x', 'web', {
      ...DUAL,
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 'http' },
        { name: 'dns', port: 53, targetPort: 'dns', protocol: 'UDP' },
      ],
    }),
    service('x', 'sticky', {
      ...DUAL,
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
      ports: [{ port: 81, targetPort: 'http' }],
    }),
    service('x', 'empty', { ...DUAL, selector: { app: 'nothing' }, ports: [{ port: 80, targetPort: 8080 }] }),
    service('x', 'v4only', {
      ipFamilyPolicy: 'SingleStack',
      selector: { app: 'web' },
      ports: [{ port: 82, targetPort: 'http' }],
    }),
  ];
}

/**
 * The backend's rules of one family in a node namespace: ip(6)tables-save of both flavours, or the
 * nft table's lines that match that family's addresses (`ip6 …` for IPv6, anything else for IPv4).
 */
function kernelRules(netns: string, family: 4 | 6, backend: 'iptables' | 'nftables'): string[] {
  const run = (cmd: string, args: string[]): string[] =>
    execFileSync('ip', ['netns', 'exec', netns, cmd, ...args], { encoding: 'utf8' }).split('\n');
  if (backend === 'iptables') {
    const tool = family === 6 ? 'ip6tables' : 'iptables';
    return [...run(`${tool}-nft-save`, []), ...run(`${tool}-legacy-save`, [])];
  }
  // The comment names the port; the rules that carry it are its pick chain's DNAT (`dnat ip to`
  // for IPv4, `dnat ip6 to` for IPv6).
  return run('nft', ['list', 'table', 'inet', 'switchyard']).filter((l) =>
    family === 6 ? l.includes('dnat ip6') : l.includes('dnat ip ') || l.includes('dnat ip addr'),
  );
}

for (const backendName of ['iptables', 'nftables'] as const) {
  describeKernel(`IPv6 services through ${backendName} (lab)`, () => {
    const LAB = `v6n${backendName.slice(0, 3)}${process.pid % 10000}`;
    let state: LabState;
    let up = false;

    beforeAll(async () => {
      // Set first: a lab that fails half-way up still has namespaces to take down.
      up = true;
      const r = await converge({
        name: LAB,
        model: modelOf(manifests()),
        files: [],
        mode: 'up',
        backend: backendName,
        agents: false,
      });
      state = r.state;
    }, 60_000);

    afterAll(async () => {
      if (up) await labDown(LAB);
    }, 60_000);

    it('gives the dual-stack service an IPv6 cluster IP over the backends IPv6 addresses', () => {
      const web6 = state.ir.services.find((t) => t.id === 'x/web:80/TCP/IPv6');
      expect(web6?.address).toMatch(/^fd00:5957:/);
      expect(web6?.backends.map((b) => b.endpoint).sort()).toEqual(BACKENDS);
      for (const b of web6?.backends ?? []) expect(b.address).toMatch(/^fd00:5957::/);
    });

    for (const family of [6, 4] as const) {
      it(`IPv${family}: spreads 1500 new connections over all 3 backends, client address kept`, async () => {
        const r = await probeService(LAB, { from: 'x/a', to: 'svc/x/web:80', count: 1500, family });
        expect(r.errors).toEqual({});
        expect(Object.keys(r.answered).sort()).toEqual(BACKENDS);
        const chi2 = chiSquare(
          BACKENDS.map((b) => r.answered[b] ?? 0),
          r.count,
        );
        console.log(
          `${backendName} IPv${family}: ${r.address} spread ${JSON.stringify(r.answered)} chi2=${chi2.toFixed(3)} ` +
            `rate=${r.rate}/s latency=${JSON.stringify(r.latencyMs)}`,
        );
        expect(chi2).toBeLessThan(CHI2_CRITICAL_DF2);
        // Pod to service: no SNAT, every backend saw x/a's own address of that family.
        for (const peers of Object.values(r.peers)) expect(Object.keys(peers)).toEqual([r.fromAddress]);
        expect(r.fromAddress.includes(':')).toBe(family === 6);
      }, 60_000);

      it(`IPv${family}: carries UDP through the service`, async () => {
        const r = await probeService(LAB, {
          from: 'x/a',
          to: 'svc/x/web:53',
          protocol: 'UDP',
          count: 300,
          family,
        });
        expect(r.errors).toEqual({});
        expect(Object.keys(r.answered).sort()).toEqual(BACKENDS);
      }, 30_000);

      it(`IPv${family}: keeps every connection of one client on one backend with ClientIP affinity`, async () => {
        const r = await probeService(LAB, { from: 'x/a', to: 'svc/x/sticky:81', count: 200, family });
        expect(r.errors).toEqual({});
        expect(Object.values(r.answered)).toEqual([200]);
      }, 30_000);

      it(`IPv${family}: refuses a service without endpoints and a port the service does not define`, async () => {
        const empty = await probeService(LAB, {
          from: 'x/a',
          to: 'svc/x/empty:80',
          count: 5,
          timeoutMs: 500,
          family,
        });
        expect(empty.answered).toEqual({});
        // Refused outright (a reset), not left to time out or reported unreachable.
        expect(empty.errors).toEqual({ ECONNREFUSED: 5 });
        const vip = state.ir.services.find(
          (t) => t.service === 'x/web' && (t.family ?? 4) === family,
        )?.address;
        const to = family === 6 ? `[${vip}]:12345` : `${vip}:12345`;
        const undefinedPort = await probeService(LAB, { from: 'x/a', to, count: 5, timeoutMs: 500, family });
        expect(undefinedPort.errors).toEqual({ ECONNREFUSED: 5 });
      }, 30_000);
    }

    it('a SingleStack IPv4 service has no IPv6 cluster IP, while its IPv4 one answers', async () => {
      expect(state.ir.services.filter((t) => t.service === 'x/v4only').map((t) => t.id)).toEqual([
        'x/v4only:82/TCP',
      ]);
      await expect(
        probeService(LAB, { from: 'x/a', to: 'svc/x/v4only:82', count: 1, family: 6 }),
      ).rejects.toThrow(/has no IPv6 cluster IP/);
      const v4 = await probeService(LAB, { from: 'x/a', to: 'svc/x/v4only:82', count: 30 });
      expect(v4.errors).toEqual({});
      // And the kernel agrees: in every node, the service is translated for IPv4 only.
      for (const node of state.topology?.nodes ?? []) {
        const v4Rules = kernelRules(node.netns, 4, backendName).filter((l) => l.includes('x/v4only'));
        const v6Rules = kernelRules(node.netns, 6, backendName).filter((l) => l.includes('x/v4only'));
        expect(v4Rules.length, node.name).toBeGreaterThan(0);
        expect(v6Rules, node.name).toEqual([]);
      }
    }, 30_000);
  });
}

describe('chi-square helper', () => {
  it('is zero for a perfect spread and grows with skew', () => {
    expect(chiSquare([1000, 1000, 1000], 3000)).toBe(0);
    expect(chiSquare([1100, 1000, 900], 3000)).toBeCloseTo(20, 5);
  });
});
