/**
 * The nodeport bench without a kernel: its targets as ratios of one run (rate at 1000 services,
 * flatness, CPU, failures, the peer address under Local), its rows and their panels, the
 * services and node ports it generates, and the native-load options it added (kept
 * connections, the peer-logging listener).
 */
import { describe, expect, it } from 'vitest';
import {
  FIRST_NODE_PORT,
  LOCAL_NODE_PORT,
  NODE_PORT_SERVICES,
  nodePortModel,
  nodePortOf,
} from '../../src/bench/scenarios/support/nodeport-lab.js';
import {
  failedConnections,
  nodePortCpuResult,
  nodePortResult,
  pointLine,
  targetLines,
  type NodePortData,
  type NodePortPoint,
} from '../../src/bench/scenarios/support/nodeport-report.js';
import { nginxConfig, wrkArgv } from '../../src/bench/scenarios/support/native-load.js';
import { scenarioLoaders } from '../../src/bench/registry.js';

function point(
  backend: string,
  services: number,
  rate: number,
  cpu: number,
  extra: Partial<NodePortPoint> = {},
): NodePortPoint {
  const run = {
    connPerSec: rate,
    connections: rate,
    softirqPer10k: cpu / 2,
    totalPer10k: cpu,
    wrkP50Ms: 0.5,
    wrkP99Ms: 2,
    failed: 0,
  };
  return {
    backend,
    services,
    applyMs: 700,
    runs: [run, { ...run, connPerSec: rate * 0.98 }, { ...run, connPerSec: rate * 1.02 }],
    reused: [{ reqPerSec: rate * 3, failed: 0 }],
    connectMs: [0.3, 0.4, 0.5, 2.5],
    connectFailed: 0,
    peers: { client: '198.19.129.250', seen: ['198.19.129.250'] },
    ...extra,
  };
}

function data(points: NodePortPoint[]): NodePortData {
  return { entry: 'nodeport', method: ['how'], points };
}

const line = (lines: string[], about: string): string => lines.find((l) => l.includes(about)) ?? '';

describe('nodeport targets', () => {
  const good = data([
    point('ebpf', 1, 15000, 1.0),
    point('ebpf', 1000, 14500, 1.1),
    point('ebpf', 10000, 14000, 1.1),
    point('iptables', 1, 13000, 2.0),
    point('iptables', 1000, 5000, 3.0),
    point('iptables', 10000, 700, 9.0),
  ]);

  it('reads the rate and CPU ratios at 1000 services and flatness from 1 to 10000', () => {
    const lines = targetLines(good);
    expect(line(lines, 'connection rate')).toBe(
      'target: eBPF connection rate ≥ 1.5× iptables at 1000 services: 2.90× (met)',
    );
    expect(line(lines, 'CPU per connection')).toMatch(/total 0\.37× \(met\), softirq 0\.37×$/);
    expect(line(lines, 'flat')).toMatch(/from 1 to 10000 services: lowest 0\.93× \(at 10000\) \(met\)$/);
    expect(line(lines, 'failed')).toBe('target: 0 failed connections in every row: met (6 points)');
    expect(line(lines, 'source address')).toMatch(/: met \(6 points\)$/);
  });

  it('says NOT met with the figures when a target is missed', () => {
    const bad = data([
      point('ebpf', 1, 15000, 1.0),
      point('ebpf', 1000, 9000, 2.0, { connectFailed: 3 }),
      point('iptables', 1, 13000, 2.0),
      point('iptables', 1000, 8000, 3.0, {
        peers: { client: '198.19.129.250', seen: ['198.19.128.1'] },
      }),
    ]);
    const lines = targetLines(bad);
    expect(line(lines, 'connection rate')).toMatch(/1\.13× \(NOT met\)$/);
    expect(line(lines, 'CPU per connection')).toMatch(/total 0\.67× \(NOT met\)/);
    expect(line(lines, 'flat')).toMatch(/lowest 0\.60× \(at 1000\) \(NOT met\)$/);
    expect(line(lines, 'failed')).toBe('target: 0 failed connections in every row: NOT met: ebpf N=1000 3');
    expect(line(lines, 'source address')).toMatch(/NOT met: iptables N=1000 saw 198\.19\.128\.1$/);
  });

  it('uses the scale nearest 1000 that both backends measured, and says when there is none', () => {
    const quick = data([point('ebpf', 100, 14000, 1), point('iptables', 100, 7000, 2)]);
    expect(line(targetLines(quick), 'connection rate')).toMatch(/at 100 services: 2\.00× \(met\)/);
    const alone = data([point('ebpf', 100, 14000, 1)]);
    expect(line(targetLines(alone), 'rate and CPU')).toMatch(/not measured/);
  });

  it('compares eBPF with node ports at XDP against eBPF at tcx only, at the same scale', () => {
    const both = data([
      point('ebpf', 1000, 15000, 1.0),
      point('ebpf-tc', 1000, 12000, 1.25),
      point('iptables', 1000, 5000, 3.0),
    ]);
    expect(line(targetLines(both), 'tcx only')).toBe(
      'eBPF with node ports at XDP vs at tcx only (ebpf-tc) at 1000 services: rate 1.25×, CPU per connection 0.80× (no target)',
    );
    expect(line(targetLines(good), 'tcx only')).toBe('');
  });

  it('counts failures of every kind: wrk errors on new and kept connections, and connects', () => {
    const p = point('ebpf', 1, 1, 1, { connectFailed: 2 });
    p.runs[0] = { ...(p.runs[0] as NodePortPoint['runs'][number]), failed: 5 };
    p.reused.push({ reqPerSec: 1, failed: 1 });
    expect(failedConnections(p)).toBe(8);
  });
});

describe('nodeport results', () => {
  const d = data([
    point('ebpf', 100, 14000, 1),
    point('iptables', 100, 7000, 2),
    { ...point('nftables', 100, 0, 0), problem: 'no connection' },
  ]);

  it('has new and reused rows (two panels) and CPU rows for measured points only', () => {
    const r = nodePortResult(d);
    expect(r.rows.map((x) => `${x.backend} ${x.params.metric}`)).toEqual([
      'ebpf new connections',
      'ebpf reused connections',
      'iptables new connections',
      'iptables reused connections',
    ]);
    expect(r.rows[0]?.median).toBe(14000);
    const cpu = nodePortCpuResult(d);
    expect(cpu.better).toBe('lower');
    expect(cpu.rows.map((x) => `${x.backend} ${x.params.metric} ${x.median}`)).toEqual([
      'ebpf softirq 0.5',
      'ebpf total 1',
      'iptables softirq 1',
      'iptables total 2',
    ]);
  });

  it('gives every figure of a point in one note, and why a point is missing', () => {
    const notes = nodePortResult(d).notes ?? [];
    expect(notes).toContain('nftables N=100: not measured: no connection');
    expect(pointLine(d.points[0] as NodePortPoint)).toBe(
      'ebpf N=100: 14000 conn/s, connect p50 0.40 ms, p99 2.50 ms (4 handshakes), wrk request p50 0.50 ms, p99 2.00 ms, ' +
        'CPU per 10k connections softirq 0.50 s, total 1.00 s, 0 failed connections; reused 42000 req/s; ' +
        "peers the Local service's backend saw: 198.19.129.250 (client 198.19.129.250); lab apply 700 ms",
    );
  });

  it('is registered as two views of one measurement', () => {
    expect(scenarioLoaders.nodeport).toBeDefined();
    expect(scenarioLoaders['nodeport-cpu']).toBeDefined();
  });
});

describe('nodeport lab manifests', () => {
  it('gives node ports while the range lasts, keeping the last for the Local service', () => {
    expect(nodePortOf(0)).toBe(FIRST_NODE_PORT);
    expect(nodePortOf(NODE_PORT_SERVICES - 1)).toBe(LOCAL_NODE_PORT - 1);
    expect(nodePortOf(NODE_PORT_SERVICES)).toBeUndefined();
  });

  it('makes NodePort services with their ports, and a Local one on the last port (from outside)', () => {
    const m = nodePortModel(3, 'nodeport');
    const view = m.services
      .map(
        (s) =>
          `${s.name} ${s.type} ${s.externalTrafficPolicy} ${s.ports.map((p) => `${p.targetPort}@${p.nodePort}`).join()}`,
      )
      .sort();
    expect(view).toEqual([
      `local NodePort Local 8081@${LOCAL_NODE_PORT}`,
      's0 NodePort Cluster 8080@30000',
      's1 NodePort Cluster 8080@30001',
      's2 NodePort Cluster 8080@30002',
    ]);
    // Beyond the range, services stay ClusterIP.
    const big = nodePortModel(NODE_PORT_SERVICES + 1, 'nodeport');
    expect(big.services.find((s) => s.name === `s${NODE_PORT_SERVICES}`)?.type).toBe('ClusterIP');
  });

  it('makes N load services and the local one (cluster IPs from a pod)', () => {
    const m = nodePortModel(3, 'clusterip');
    expect(m.services.map((s) => s.name).sort()).toEqual(['local', 's0', 's1', 's2']);
  });
});

describe('native load for kept connections and peer addresses', () => {
  it('wrk keeps connections when asked (no Connection: close)', () => {
    const argv = wrkArgv({ target: '198.19.128.1', port: 30000, connections: 32, seconds: 1, reuse: true });
    expect(argv).not.toContain('Connection: close');
    expect(argv.at(-1)).toBe('http://198.19.128.1:30000/');
  });

  it('nginx keeps connections and logs peers on a second listener only', () => {
    const conf = nginxConfig('/tmp/sy-nginx-x', {
      address: '198.18.0.2',
      port: 8080,
      keepAlive: true,
      peerLogPort: 8081,
    });
    expect(conf).toMatch(/^\s*keepalive_timeout 60s;$/m);
    expect(conf).not.toMatch(/keepalive_timeout 0;/);
    expect(conf).toMatch(/^\s*access_log off;$/m);
    expect(conf).toMatch(
      /^\s*listen 198\.18\.0\.2:8081;\n\s*access_log \/tmp\/sy-nginx-x\/peers\.log peer;$/m,
    );
    expect(conf).toMatch(/^\s*log_format peer '\$remote_addr';$/m);
  });
});
