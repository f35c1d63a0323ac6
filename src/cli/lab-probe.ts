/**
 * `switchyard lab probe`: many new connections from one pod to an address or service port, and
 * how many each backend answered, with failures and latency percentiles.
 */
import { Option, type Command } from 'commander';
import { integerIn, parseFamily, parseTimeoutMs } from './options.js';
import { addLabOptions, chooseLab, type LabFlags } from './lab-choice.js';
import { formatTable, printJson } from './output.js';
import { hostPort } from '../util/ip.js';
import type { ServiceProbeResult } from '../lab/probe-service.js';

const MAX_COUNT = 1_000_000;

/** ` ([fd00:5957:0:1::4]:80)`: the address a service or node port resolved to, when `to` did not say it. */
export function shownTarget(r: Pick<ServiceProbeResult, 'to' | 'address' | 'port'>): string {
  const shown = hostPort(r.address, r.port);
  return r.to === shown || r.to === `lb/${shown}` ? '' : ` (${shown})`;
}

const parseCount = integerIn('--count', 1, MAX_COUNT);
const parseConcurrency = integerIn('--concurrency', 1, 2000);

interface ProbeCliOptions extends LabFlags {
  from: string;
  to: string;
  protocol: 'TCP' | 'UDP';
  count: number;
  concurrency?: number;
  timeout?: number;
  json?: boolean;
  family?: 4 | 6;
}

export function registerLabProbe(lab: Command): void {
  addLabOptions(lab.command('probe'))
    .description(
      'open many new connections from a pod (or a client outside the cluster) to an address or service and count who answers, and the client address each saw',
    )
    .requiredOption(
      '--from <source>',
      'source pod namespace/name, or outside:NAME (a client outside the cluster)',
    )
    .requiredOption(
      '--to <target>',
      'IP:PORT, [IPv6]:PORT, svc/NAMESPACE/NAME:PORT, nodeport/NODE:PORT (the node external address) or lb/IP:PORT',
    )
    .addOption(
      new Option('--protocol <protocol>', 'TCP or UDP')
        .choices(['TCP', 'UDP', 'tcp', 'udp'])
        .default('TCP')
        .argParser((v) => v.toUpperCase()),
    )
    .option(
      '--count <n>',
      'connections (TCP) or request/answer exchanges on fresh sockets (UDP)',
      parseCount,
      1000,
    )
    .option('--concurrency <n>', 'probes in flight at once (default 200)', parseConcurrency)
    .option('--timeout <ms>', 'per-probe timeout (default 1000)', parseTimeoutMs)
    .option(
      '--family <4|6>',
      "6: the service's IPv6 cluster IP from the pod's IPv6 address (answered only where a backend translates IPv6 services)",
      parseFamily,
    )
    .option(
      '--json',
      'machine-readable: {from, fromAddress, to, address, port, protocol, count, answered, peers, failures, latencyMs}',
    )
    .action(async (opts: ProbeCliOptions) => {
      const name = chooseLab(opts);
      // src/lab pulls in koffi: load it only when the command runs.
      const l = await import('../lab/index.js');
      const r = await l.probeService(name, {
        from: opts.from,
        to: opts.to,
        protocol: opts.protocol,
        count: opts.count,
        ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
        ...(opts.timeout ? { timeoutMs: opts.timeout } : {}),
        ...(opts.family ? { family: opts.family } : {}),
      });
      if (opts.json) return printJson(r);
      process.stdout.write(
        `${r.count} ${r.protocol} probes ${r.from} (${r.fromAddress}) → ${r.to}${shownTarget(r)} in ${r.durationMs} ms (${r.rate}/s): ` +
          `${r.count - r.failures} answered, ${r.failures} failed\n\n`,
      );
      const share = (n: number): string => `${((100 * n) / r.count).toFixed(1)}%`;
      // One row per answering pod and client address it saw: the source (kept) or a node's (SNAT).
      const rows: (string | number)[][] = Object.entries(r.peers).flatMap(([pod, peers]) =>
        Object.entries(peers).map(([peer, n]) => [pod, peer, n, share(n)]),
      );
      for (const [why, n] of Object.entries(r.errors)) rows.push([`(failed: ${why})`, '-', n, share(n)]);
      process.stdout.write(formatTable(['ANSWERED BY', 'PEER SEEN', 'PROBES', 'SHARE'], rows) + '\n\n');
      process.stdout.write(
        `latency ms: p50 ${r.latencyMs.p50}  p90 ${r.latencyMs.p90}  p99 ${r.latencyMs.p99}\n`,
      );
    });
}
