/**
 * Flow events of the nftables backend with real packets (iptables aggregates flows in ipsets
 * instead: observe-iptables.test.ts): a lab
 * (`sy-nfl…`, one node) with x/a accepting TCP 80 from x/b only and a GlobalPolicy logging
 * everything into namespace x; the netfilter event source on the node. Allowed connections give
 * one allow event naming the allowing rule, denied ones deny events naming the default deny, the
 * Log rule log events, conntrack end events with counts; with flowLogs off only Log remains; a
 * flood beyond the kernel rate limit is reported as lost instead of being delivered.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Backend, NodeTarget } from '../../src/dataplane/backend.js';
import { runInNetns } from '../../src/dataplane/exec.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import type { IR } from '../../src/ir/types.js';
import { converge, labDown, measureReach, type LabState } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import type { ConnectionEvent, EventSource, KernelEvent, VerdictEvent } from '../../src/dataplane/events.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { globalPolicy, namespace, networkPolicy, pod, toYaml } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';

const PORTS = [{ name: 'http', containerPort: 80, protocol: 'TCP' as const }];
const ALLOW_RULE = 'np:x/a-from-b/ingress/0';
const LOG_RULE = 'gp:audit-x/ingress/0';
const DEFAULT_DENY = 'x/a/ingress/default';

const FLOOD = `
import dgram from 'node:dgram';
const { host, port, count, source } = JSON.parse(process.argv.at(-1));
const s = dgram.createSocket('udp4');
s.on('error', () => {});
let ok = 0;
let pending = count;
s.bind(0, source, async () => {
  const buf = Buffer.alloc(16);
  for (let i = 0; i < count; i++) {
    s.send(buf, port, host, (err) => { if (!err) ok++; if (--pending === 0) { s.close(); console.log(String(ok)); } });
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 1));
  }
});
`;

function until(cond: () => boolean, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() - start > ms) return reject(new Error('condition not met in time'));
      setTimeout(tick, 50);
    };
    tick();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const backendName of ['nftables'] as const) {
  describeKernel(`flow events on ${backendName} (NFLOG + conntrack)`, () => {
    const LAB = `nfln${process.pid % 100000}`;
    let dir = '';
    let up = false;
    let state: LabState;
    let ir: IR;
    let target: NodeTarget;
    let source: EventSource | undefined;
    const events: KernelEvent[] = [];
    const lost: { count: number; where: string }[] = [];

    const labPod = (id: string) => {
      const p = state.topology?.pods.find((x) => x.id === id);
      if (!p) throw new Error(`no pod ${id}`);
      return p;
    };
    const verdicts = (filter: (e: VerdictEvent) => boolean): VerdictEvent[] =>
      events.filter((e): e is VerdictEvent => e.kind === 'verdict' && filter(e));
    const fromTo = (e: { src: string; dst: string }, src: string, dst: string): boolean =>
      e.src === labPod(src).address && e.dst === labPod(dst).address;
    const backendWith = (flowLogs: boolean): Backend => createNftablesBackend({ flowLogs });

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'sy-nfl-'));
      const file = join(dir, 'lab.yaml');
      writeFileSync(
        file,
        toYaml([
          namespace('x', { ns: 'x' }),
          pod('x', 'a', { labels: { pod: 'a' }, ports: PORTS }),
          pod('x', 'b', { labels: { pod: 'b' }, ports: PORTS }),
          pod('x', 'c', { labels: { pod: 'c' }, ports: PORTS }),
          networkPolicy('x', 'a-from-b', {
            podSelector: { matchLabels: { pod: 'a' } },
            ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }],
          }),
          globalPolicy('audit-x', {
            order: 1,
            namespaceSelector: { matchLabels: { ns: 'x' } },
            ingress: [{ action: 'Log' }],
          }),
        ]),
      );
      const result = await converge({
        name: LAB,
        model: loadManifests([file]),
        files: [file],
        mode: 'up',
        backend: backendName,
        nodeCount: 1,
        // The test reads NFLOG itself: one listener per group and namespace, so no lab agent.
        agents: false,
      });
      up = true;
      state = result.state;
      ir = state.ir as IR;
      const node = state.topology?.nodes[0];
      if (!node) throw new Error('lab has no node');
      target = { scope: LAB, node: node.name, netns: node.netns };
      const running = (await loadBackend(backendName)).flowSource(target, { ir: () => ir, pollMs: 200 });
      source = running;
      await running.start({
        event: (e) => events.push(e),
        lost: (count, where) => lost.push({ count, where }),
      });
    }, 120_000);

    afterAll(async () => {
      await source?.stop();
      if (up) await labDown(LAB);
      rmSync(dir, { recursive: true, force: true });
    }, 60_000);

    it('an allowed connection gives one allow event naming the allowing rule and x/a', async () => {
      events.length = 0;
      const r = await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b'], timeoutMs: 1000 });
      expect(r.matrix.results['x/b']?.['x/a']).toBe(true);
      await until(() => verdicts((e) => e.verdict === 'allow' && fromTo(e, 'x/b', 'x/a')).length >= 2, 5000);
      await sleep(300);
      const ingress = verdicts(
        (e) => e.verdict === 'allow' && e.direction === 'ingress' && fromTo(e, 'x/b', 'x/a'),
      );
      expect(ingress).toHaveLength(1);
      expect(ingress[0]).toMatchObject({ rule: ALLOW_RULE, endpoint: 'x/a', protocol: 6, dport: 80 });
      expect(ingress[0]?.bytes).toBeGreaterThan(0);
      // x/b has no egress policy: its side of the same connection is its default allow.
      const egress = verdicts(
        (e) => e.verdict === 'allow' && e.direction === 'egress' && fromTo(e, 'x/b', 'x/a'),
      );
      expect(egress.map((e) => [e.rule, e.endpoint])).toEqual([['x/b/egress/default', 'x/b']]);
      // The Log GlobalPolicy rule logs the same first packet.
      const logs = verdicts((e) => e.verdict === 'log' && fromTo(e, 'x/b', 'x/a'));
      expect(logs.length).toBeGreaterThanOrEqual(1);
      expect(logs[0]).toMatchObject({ rule: LOG_RULE, endpoint: 'x/a', direction: 'ingress' });
    });

    it('a denied connection gives deny events naming the default deny', async () => {
      events.length = 0;
      const r = await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/c'], timeoutMs: 500 });
      expect(r.matrix.results['x/c']?.['x/a']).toBe(false);
      await until(() => verdicts((e) => e.verdict === 'deny' && fromTo(e, 'x/c', 'x/a')).length >= 1, 5000);
      const denies = verdicts((e) => e.verdict === 'deny' && fromTo(e, 'x/c', 'x/a'));
      for (const d of denies)
        expect(d).toMatchObject({ rule: DEFAULT_DENY, endpoint: 'x/a', direction: 'ingress' });
      expect(
        verdicts((e) => e.verdict === 'allow' && e.direction === 'ingress' && fromTo(e, 'x/c', 'x/a')),
      ).toEqual([]);
    });

    it('a connection that ends carries its packets and bytes', async () => {
      events.length = 0;
      const r = await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b'], timeoutMs: 1000 });
      expect(r.matrix.results['x/b']?.['x/a']).toBe(true);
      // TIME_WAIT would keep the entry for minutes: end it now.
      await runInNetns(target.netns, 'conntrack', [
        '-D',
        '-p',
        'tcp',
        '-s',
        labPod('x/b').address,
        '-d',
        labPod('x/a').address,
        '--dport',
        '80',
      ]);
      const ended = (): ConnectionEvent[] =>
        events.filter(
          (e): e is ConnectionEvent =>
            e.kind === 'connection' && e.phase === 'end' && fromTo(e, 'x/b', 'x/a'),
        );
      await until(() => ended().length >= 1, 5000);
      expect(ended()[0]).toMatchObject({ protocol: 6, dport: 80 });
      expect(ended()[0]?.packets).toBeGreaterThan(0);
      expect(ended()[0]?.bytes).toBeGreaterThan(0);
    });

    it('with flowLogs: false only the Log rule reports', async () => {
      await backendWith(false).apply(target, ir);
      try {
        // NFLOG batches messages (flushed within 100 ms): let the earlier tests' ones arrive first.
        await sleep(400);
        events.length = 0;
        await measureReach(LAB, { port: 80, protocol: 'TCP', from: ['x/b', 'x/c'], timeoutMs: 500 });
        await until(() => verdicts((e) => e.verdict === 'log').length >= 2, 5000);
        await sleep(500);
        expect(verdicts((e) => e.verdict !== 'log')).toEqual([]);
      } finally {
        await backendWith(true).apply(target, ir);
      }
    });

    it('a flood beyond the rate limit is reported as lost, not delivered one by one', async () => {
      await sleep(1200); // a full bucket, and the counter poll caught up
      events.length = 0;
      lost.length = 0;
      const count = 4000;
      const started = Date.now();
      const child = spawn(
        'nsenter',
        [
          `--net=/run/netns/${labPod('x/c').netns}`,
          '--',
          process.execPath,
          '--input-type=module',
          '-e',
          FLOOD,
          JSON.stringify({ host: labPod('x/a').address, port: 80, count, source: labPod('x/c').address }),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      // 'close', not 'exit': the count on stdout may still be in flight when the process exits.
      await new Promise((resolve) => child.on('close', resolve));
      const sent = Number(out.trim());
      expect(Date.now() - started).toBeLessThan(5000);
      expect(sent).toBeGreaterThan(count * 0.9);
      // Every datagram is two decisions: x/c's egress default allow, x/a's ingress default deny.
      const decisions = 2 * sent;
      const flood = (): VerdictEvent[] =>
        verdicts((e) => e.protocol === 17 && fromTo(e, 'x/c', 'x/a') && e.verdict !== 'log');
      const lostTotal = (): number => lost.reduce((n, l) => n + l.count, 0);
      await until(() => flood().length + lostTotal() >= decisions, 8000).catch(() => undefined);
      expect(lost.some((l) => l.where === 'rate-limit' && l.count > 0)).toBe(true);
      expect(flood().length).toBeLessThan(decisions);
      expect(flood().length + lostTotal()).toBeGreaterThanOrEqual(decisions);
      // The logged ones still name the right rules.
      expect(new Set(flood().map((e) => e.rule))).toEqual(new Set(['x/c/egress/default', DEFAULT_DENY]));
    }, 30_000);
  });
}
