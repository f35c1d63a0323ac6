/** `lab probe`'s pure parts: target resolution against the IR, tallies and percentiles. */
import { describe, expect, it } from 'vitest';
import { resolveTarget, summarise } from '../../src/lab/probe-service.js';
import { percentile } from '../../src/util/stats.js';
import { servicesIR } from './netfilter-services-fixture.js';

const ir = servicesIR();

describe('lab probe', () => {
  it('resolves svc/NS/NAME:PORT to the service address, and IP:PORT as given', () => {
    const web = ir.services.find((t) => t.id === 'x/web:80/TCP');
    expect(resolveTarget(ir, 'svc/x/web:80', 'TCP')).toEqual({ address: web?.address, port: 80 });
    expect(resolveTarget(ir, 'svc/x/web:53', 'UDP').port).toBe(53);
    expect(resolveTarget(ir, '198.19.0.9:8080', 'TCP')).toEqual({ address: '198.19.0.9', port: 8080 });
  });

  it('names what is wrong with a target', () => {
    expect(() => resolveTarget(ir, 'svc/x/web:53', 'TCP')).toThrow(
      /has no port 53\/TCP \(ports: 80\/TCP, 53\/UDP\)/,
    );
    expect(() => resolveTarget(ir, 'svc/x/nope:80', 'TCP')).toThrow(/no service 'x\/nope'/);
    expect(() => resolveTarget(ir, 'web:80', 'TCP')).toThrow(
      /IP:PORT, \[IPv6\]:PORT, svc\/NAMESPACE\/NAME:PORT, nodeport\/NODE:PORT or lb\/IP:PORT/,
    );
    expect(() => resolveTarget(ir, 'nodeport/node-9:30080', 'TCP')).toThrow(/no node 'node-9'/);
    expect(() => resolveTarget(ir, '198.19.0.9:70000', 'TCP')).toThrow(/--to/);
  });

  it('counts answers per pod, failures by reason, and nearest-rank percentiles of answered probes', () => {
    const s = summarise([
      { ok: true, answer: 'x/b2', ms: 3 },
      { ok: true, answer: 'x/b1', ms: 1 },
      { ok: true, answer: 'x/b1', ms: 2 },
      { ok: false, error: 'ECONNREFUSED', ms: 0 },
      { ok: true, ms: 5 },
    ]);
    expect(s.answered).toEqual({ 'x/b1': 2, 'x/b2': 1 });
    expect(Object.keys(s.answered)).toEqual(['x/b1', 'x/b2']);
    expect(s.failures).toBe(2);
    expect(s.errors).toEqual({ ECONNREFUSED: 1, 'no answer': 1 });
    expect(s.latencyMs).toEqual({ p50: 2, p90: 3, p99: 3 });
    expect(percentile([], 50)).toBeNaN();
    expect(summarise([]).latencyMs).toEqual({ p50: 0, p90: 0, p99: 0 });
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90)).toBe(9);
  });
});
