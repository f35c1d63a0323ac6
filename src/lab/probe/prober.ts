/**
 * Probes from many pods at once inside the calling process. For each source pod the process
 * joins the pod's cgroup and the thread its namespace, opens one socket per destination and
 * starts the connects (so packets leave from the pod, and cgroup socket hooks see the pod), then
 * returns home; Node then watches all sockets together. No process per source: a 9×9 matrix costs
 * a few milliseconds plus the connection timeout of whatever is blocked.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import {
  closeFd,
  currentCgroup,
  moveToCgroup,
  sendOn,
  startConnects,
  type Connecting,
} from '../../netns/index.js';
import { parseProbeAnswer, type ProbeOutcome, type ProbeTarget } from './protocol.js';
import { errorMessage } from '../../util/errors.js';

export interface ProbeSource {
  id: string;
  netns: string;
  /** The pod's cgroup; none for an outside client (its sockets must not look like the lab's pods'). */
  cgroup?: string;
}

export interface ProbeRun {
  protocol: 'TCP' | 'UDP';
  port: number;
  timeoutMs: number;
  sources: readonly ProbeSource[];
  targets: readonly ProbeTarget[];
  /** Called as each pair's outcome is known (for a progress bar). */
  onOutcome?: () => void;
}

/** Sockets open at once; well below the usual file limit. */
const MAX_SOCKETS = 4000;
const UDP_RESEND_MS = 200;
const REQUEST = Buffer.from('probe\n');

function watchTcp(fd: number, timeoutMs: number): Promise<ProbeOutcome> {
  const start = performance.now();
  return new Promise((resolve) => {
    const sock = new net.Socket({ fd, readable: true, writable: true });
    let connected = false;
    let answer = '';
    let settled = false;
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const out: ProbeOutcome = { ok: connected, ms: Math.round(performance.now() - start) };
      if (answer.trim()) Object.assign(out, parseProbeAnswer(answer));
      if (error && !connected) out.error = error;
      resolve(out);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    // A write completes only once the handshake has: that is "established", whoever listens.
    sock.write('\n', (err) => {
      if (err) finish((err as NodeJS.ErrnoException).code ?? err.message);
      else connected = true;
    });
    sock.on('data', (d: Buffer) => {
      answer += d.toString('utf8');
      if (answer.includes('\n')) finish();
    });
    sock.on('end', () => finish());
    sock.on('close', () => finish());
    sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  });
}

function watchUdp(fd: number, timeoutMs: number, address: string): Promise<ProbeOutcome> {
  const start = performance.now();
  return new Promise((resolve) => {
    const sock = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (out: Omit<ProbeOutcome, 'ms'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(resend);
      sock.close();
      resolve({ ...out, ms: Math.round(performance.now() - start) });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeoutMs);
    // UDP has no handshake: resend until answered or out of time (the first went out at connect).
    const resend = setInterval(() => sendOn(fd, REQUEST), UDP_RESEND_MS);
    sock.on('message', (msg) => finish({ ok: true, ...parseProbeAnswer(msg.toString('utf8')) }));
    // The socket is connected, so an ICMP port unreachable ends the probe early.
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    sock.bind({ fd });
  });
}

function launch(src: ProbeSource, run: ProbeRun, home: string): Connecting[] {
  if (src.cgroup) moveToCgroup(src.cgroup, process.pid);
  try {
    return startConnects(
      src.netns,
      run.targets.map((t) => ({
        address: t.address,
        port: run.port,
        protocol: run.protocol,
        ...(run.protocol === 'UDP' ? { payload: REQUEST } : {}),
      })),
    );
  } finally {
    if (src.cgroup) moveToCgroup(home, process.pid);
  }
}

/** results[source id][target id] */
export async function probeMatrix(run: ProbeRun): Promise<Record<string, Record<string, ProbeOutcome>>> {
  const home = currentCgroup();
  const perRound = Math.max(1, Math.floor(MAX_SOCKETS / Math.max(1, run.targets.length)));
  const out: Record<string, Record<string, ProbeOutcome>> = {};
  for (let i = 0; i < run.sources.length; i += perRound) {
    const round = run.sources.slice(i, i + perRound);
    const pending: Promise<void>[] = [];
    for (const src of round) {
      const row: Record<string, ProbeOutcome> = {};
      out[src.id] = row;
      const connecting = launch(src, run, home);
      connecting.forEach((c, j) => {
        const target = run.targets[j] as ProbeTarget;
        if ('error' in c) {
          row[target.id] = { ok: false, error: c.error, ms: 0 };
          run.onOutcome?.();
          return;
        }
        let watching: Promise<ProbeOutcome>;
        try {
          watching =
            run.protocol === 'TCP'
              ? watchTcp(c.fd, run.timeoutMs)
              : watchUdp(c.fd, run.timeoutMs, target.address);
        } catch (e) {
          closeFd(c.fd);
          watching = Promise.resolve({ ok: false, error: errorMessage(e), ms: 0 });
        }
        pending.push(
          watching.then((o) => {
            row[target.id] = o;
            run.onOutcome?.();
          }),
        );
      });
    }
    await Promise.all(pending);
  }
  return out;
}
