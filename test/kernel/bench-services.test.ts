/**
 * The `services` bench's connection rows against the real kernel at one small point: wrk in the
 * client pod reaches nginx in the backend pod only through the service VIP (port 80 → 8080), so
 * connections without errors prove each backend's load balancing carried them; the Node.js
 * client's row is measured at the same point. Never absolute performance (shared machines).
 */
import { expect, it } from 'vitest';
import { connectionRows } from '../../src/bench/scenarios/services.js';
import { listNetns } from '../../src/netns/index.js';
import { quickContext } from '../support/bench.js';
import { describeKernel } from '../support/kernel.js';

const LAB = `bsvct${process.pid % 10_000}`;

describeKernel('services bench scenario (one point)', () => {
  it(
    'wrk and the node client connect through 100 services on eBPF and iptables',
    { timeout: 120_000 },
    async () => {
      const ctx = quickContext();
      const notes: string[] = [];
      const rows = await connectionRows(ctx, [100], notes, ['ebpf', 'iptables'], LAB);
      expect(ctx.ticks).toBe(2);
      expect(rows.map((r) => `${r.backend} ${r.params.services} ${r.params.client}`)).toEqual([
        'ebpf 100 wrk',
        'ebpf 100 node',
        'iptables 100 wrk',
        'iptables 100 node',
      ]);
      for (const r of rows) {
        expect(r.params.metric).toBe('new connections');
        expect(r.samples.length, `${r.backend} ${r.params.client}`).toBeGreaterThan(0);
        for (const s of r.samples) expect(s, `${r.backend} ${r.params.client}`).toBeGreaterThan(0);
      }
      for (const backend of ['ebpf', 'iptables']) {
        const note = notes.find((n) => n.startsWith(`${backend} N=100: wrk`));
        expect(note, backend).toMatch(
          /wrk latency p50 [\d.]+ ms, p99 [\d.]+ ms .*softirq [\d.]+ CPU-s per 10k connections, 0 errors; node client: .* \d+ failed;/,
        );
      }
      // The lab is down again.
      expect(listNetns().filter((n) => n.startsWith('sy-bench-svc'))).toEqual([]);
    },
  );
});
