/**
 * The native-load helpers of the observe and services benches: wrk's report parsed from real
 * captured output (test/fixtures/wrk: a run against the bench's nginx, one against an nginx
 * answering 404, one against a server that resets or holds connections), the softirq column of
 * /proc/stat, the generated nginx config and the VIP the services bench loads.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { middleVip } from '../../src/bench/scenarios/services.js';
import {
  nginxConfig,
  parseWrkOutput,
  perTenThousand,
  softirqSeconds,
  wrkArgv,
  wrkErrorCount,
  wrkTimeMs,
} from '../../src/bench/scenarios/support/native-load.js';

const fixture = (name: string): string =>
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'wrk', name), 'utf8');

describe('wrk output', () => {
  it('parses a clean run: requests, rate, latency percentiles, no errors', () => {
    const r = parseWrkOutput(fixture('ok.txt'));
    expect(r.requests).toBe(13338);
    expect(r.seconds).toBeCloseTo(1.01, 6);
    expect(r.requestsPerSecond).toBeCloseTo(13217.02, 6);
    expect(r.latencyMs.p50).toBeCloseTo(1.43, 6);
    expect(r.latencyMs.p75).toBeCloseTo(1.76, 6);
    expect(r.latencyMs.p90).toBeCloseTo(2.06, 6);
    expect(r.latencyMs.p99).toBeCloseTo(7.95, 6);
    expect(r.errors).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
    expect(wrkErrorCount(r)).toBe(0);
    expect(r.badStatus).toBe(0);
  });

  it('counts answers that are not 2xx/3xx, with latencies in µs', () => {
    const r = parseWrkOutput(fixture('status-404.txt'));
    expect(r.requests).toBe(13375);
    expect(r.badStatus).toBe(13375);
    expect(r.latencyMs.p50).toBeCloseTo(0.185, 9);
    expect(r.latencyMs.p99).toBeCloseTo(0.362, 9);
    expect(wrkErrorCount(r)).toBe(0);
  });

  it('reads the socket errors line', () => {
    const r = parseWrkOutput(fixture('socket-errors.txt'));
    expect(r.requests).toBe(0);
    expect(r.requestsPerSecond).toBe(0);
    expect(r.errors).toEqual({ connect: 0, read: 4, write: 3, timeout: 0 });
    expect(wrkErrorCount(r)).toBe(7);
  });

  it('refuses output without a report (wrk could not connect)', () => {
    expect(() => parseWrkOutput('unable to connect to 198.18.250.2:8099 Connection refused\n')).toThrow(
      /no 'N requests in T' line/,
    );
  });

  it('converts every time unit wrk prints to ms', () => {
    expect(wrkTimeMs('250.00us')).toBeCloseTo(0.25, 9);
    expect(wrkTimeMs('1.50ms')).toBeCloseTo(1.5, 9);
    expect(wrkTimeMs('2.00s')).toBe(2000);
    expect(wrkTimeMs('1.00m')).toBe(60_000);
    expect(() => wrkTimeMs('-nan%')).toThrow();
  });

  it('runs one thread with Connection: close and latency percentiles', () => {
    const argv = wrkArgv({ target: '198.18.0.5', port: 8080, connections: 32, seconds: 1 });
    expect(argv).toEqual([
      '-t1',
      '-c',
      '32',
      '-d',
      '1s',
      '--timeout',
      '2s',
      '--latency',
      '-H',
      'Connection: close',
      'http://198.18.0.5:8080/',
    ]);
  });
});

describe('CPU accounting', () => {
  // The first lines of a real /proc/stat (USER_HZ 100): softirq is the 7th value.
  const stat =
    'cpu  1616098 346 343132 1816386 2938 0 59571 3038 0 0\n' +
    'cpu0 812070 190 163780 915271 760 0 27355 1508 0 0\n' +
    'cpu1 804027 156 179351 901115 2178 0 32215 1529 0 0\n';

  it('reads softirq seconds of all CPUs from the cpu line', () => {
    expect(softirqSeconds(stat)).toBeCloseTo(595.71, 6);
    expect(() => softirqSeconds('intr 1 2 3\n')).toThrow(/softirq/);
  });

  it('moves on this machine and never goes back', () => {
    const a = softirqSeconds();
    const b = softirqSeconds();
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThanOrEqual(a);
  });

  it('scales CPU seconds to 10k connections', () => {
    expect(perTenThousand(0.5, 20_000)).toBeCloseTo(0.25, 9);
    expect(perTenThousand(1, 0)).toBeNaN();
  });
});

describe('nginx config', () => {
  const dir = '/tmp/sy-nginx-test-abc';
  const conf = nginxConfig(dir, { address: '198.18.0.7', port: 8080 });

  it('listens on the pod address, in the foreground, without an access log', () => {
    expect(conf).toMatch(/^\s*listen 198\.18\.0\.7:8080 backlog=\d+;$/m);
    expect(conf).toMatch(/^daemon off;$/m);
    expect(conf).toMatch(/^\s*access_log off;$/m);
    expect(conf).toMatch(/^\s*keepalive_timeout 0;$/m);
    expect(conf).toMatch(/^worker_processes 1;$/m);
  });

  it('keeps every file it names inside its directory', () => {
    const paths = [...conf.matchAll(/\s(\/[^\s;]+)/g)].map((m) => m[1]);
    expect(paths.length).toBeGreaterThanOrEqual(7);
    for (const p of paths) expect(p?.startsWith(`${dir}/`), p).toBe(true);
  });
});

describe('services bench target', () => {
  it('is the middle service in the order of service-port ids', () => {
    expect(middleVip(1)).toBe('198.19.0.1');
    for (const n of [2, 100, 1000, 10_000]) {
      const chosen = middleVip(n);
      const index = Array.from({ length: n }, (_, i) => i).find((i) => {
        const v = i + 1;
        return `198.19.${v >> 8}.${v & 0xff}` === chosen;
      });
      expect(index, `N=${n}`).toBeDefined();
      const id = `b/s${index}:80/TCP`;
      const before = Array.from({ length: n }, (_, i) => `b/s${i}:80/TCP`).filter((x) => x < id).length;
      expect(before, `N=${n}`).toBe(Math.floor((n - 1) / 2));
    }
  });
});
