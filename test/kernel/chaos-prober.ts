/**
 * The chaos test's prober: one process per client pod, started inside the pod's network
 * namespace (`ip netns exec`), that opens a new TCP connection every INTERVAL_MS, round-robin over
 * its targets, and prints one JSON line per attempt. A connection counts as made when the
 * handshake completes before TIMEOUT_MS; the timeout is below the first SYN retransmission (1 s),
 * so a success means the first SYN, sent at `t`, passed.
 *
 * stdin, one JSON object a line: `{"targets":[{"id":"app/s0","address":"198.18.0.2"}]}` replaces
 * the targets (from the next attempt on). stdout: `{"id","t","ms","ok","e"?}` per attempt (`t` =
 * epoch ms at connect, `lp` = the source port), and on SIGTERM a last `{"stats":…}` line: how late launches were, which
 * says whether the prober kept its own pace.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';

const INTERVAL_MS = Number(process.env.CHAOS_PROBE_INTERVAL_MS ?? 10);
const TIMEOUT_MS = Number(process.env.CHAOS_PROBE_TIMEOUT_MS ?? 900);
const PORT = Number(process.env.CHAOS_PROBE_PORT ?? 80);

interface Target {
  id: string;
  address: string;
}

let targets: Target[] = [];
let next = 0;
let launched = 0;
let inFlight = 0;
let maxInFlight = 0;
const lateness: number[] = [];

function attempt(target: Target): void {
  const t = Date.now();
  const started = performance.now();
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  const sock = net.connect({ host: target.address, port: PORT });
  let done = false;
  const finish = (ok: boolean, e?: string): void => {
    if (done) return;
    done = true;
    inFlight -= 1;
    clearTimeout(timer);
    // The source port, read before the socket is gone: a false pass on a reused 5-tuple shows.
    const lp = sock.localPort;
    sock.destroy();
    const ms = Math.round((performance.now() - started) * 10) / 10;
    process.stdout.write(
      JSON.stringify({ id: target.id, t, ms, ok, ...(lp ? { lp } : {}), ...(e ? { e } : {}) }) + '\n',
    );
  };
  const timer = setTimeout(() => finish(false, 'timeout'), TIMEOUT_MS);
  sock.on('connect', () => finish(true));
  sock.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
}

// Launches are scheduled on an absolute grid, so a slow tick is caught up on, and how late each
// launch was (against its slot) is the prober's own bottleneck figure.
const origin = performance.now();
let slot = 0;
function tick(): void {
  const now = performance.now();
  while (origin + slot * INTERVAL_MS <= now) {
    lateness.push(now - (origin + slot * INTERVAL_MS));
    slot += 1;
    const target = targets.length > 0 ? targets[next % targets.length] : undefined;
    next += 1;
    if (target) {
      launched += 1;
      attempt(target);
    }
  }
  setTimeout(tick, Math.max(0, origin + slot * INTERVAL_MS - performance.now()));
}

// The test reads until it stops us; a closed pipe means it is gone, and so are we.
process.stdout.on('error', () => process.exit(0));

createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line) as { targets?: Target[] };
  if (msg.targets) targets = msg.targets;
});

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
}

process.on('SIGTERM', () => {
  const sorted = lateness.sort((a, b) => a - b);
  const round = (n: number): number => Math.round(n * 10) / 10;
  const cpu = process.cpuUsage();
  const stats = {
    launched,
    slots: slot,
    maxInFlight,
    lateMs: {
      p50: round(quantile(sorted, 0.5)),
      p99: round(quantile(sorted, 0.99)),
      max: round(sorted.at(-1) ?? 0),
    },
    cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    wallMs: Math.round(performance.now() - origin),
  };
  process.stdout.write(JSON.stringify({ stats }) + '\n', () => process.exit(0));
});

tick();
