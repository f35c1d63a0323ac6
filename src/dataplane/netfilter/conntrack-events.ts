/**
 * Connection lifecycle from conntrack, inside one project network namespace: accounting switched on
 * there (net.netfilter.nf_conntrack_acct is per namespace and only applies to entries created
 * afterwards), then `conntrack -E -e NEW,DESTROY -o timestamp,extended` entered into the namespace
 * with nsenter. DESTROY lines become ConnectionEvents of phase `end`; optionally a periodic
 * `conntrack -L -o extended` reports phase `update` for every live entry.
 *
 * packets/bytes are the connection's total in BOTH directions (original + reply), as conntrack's
 * accounting counts them at the node; src/dst/sport/dport are the original direction's.
 */
import type { ChildProcess } from 'node:child_process';
import { runInNetns } from '../exec.js';
import { spawnInNetns } from '../../netns/spawn.js';
import { writeSysctls } from '../../netns/sysctl.js';
import { errorMessage } from '../../util/errors.js';
import type { ConnectionEvent } from '../events.js';

export interface ConntrackEventOptions {
  /** Project namespace (`sy-…`). */
  netns: string;
  onEvent(e: ConnectionEvent): void;
  /** A line that could not be parsed, or the tool's complaints (stderr). */
  onError?(message: string): void;
  /** Every this many ms, `conntrack -L` totals as phase `update`; 0 (default) never. */
  updateIntervalMs?: number;
}

export interface ConntrackEvents {
  stop(): Promise<void>;
}

export interface ParsedConntrackLine {
  type: 'NEW' | 'DESTROY' | 'UPDATE' | undefined;
  /** Seconds since the epoch with fraction, from `-o timestamp`. */
  timestamp?: number;
  protocol: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Per direction: [original, reply]; undefined without accounting. */
  packets?: [number, number];
  bytes?: [number, number];
}

/**
 * One line of `conntrack -E -o timestamp,extended` or `conntrack -L -o extended`:
 *
 *   [1795616902.340164]	[DESTROY] ipv4     2 tcp      6 119 TIME_WAIT src=… dst=… sport=… dport=…
 *       packets=4 bytes=216 src=… dst=… sport=… dport=… packets=4 bytes=221 [ASSURED] …
 *
 * The first src/dst/ports/packets/bytes belong to the original direction, the second to the reply.
 */
export function parseConntrackLine(line: string): ParsedConntrackLine | undefined {
  const m =
    /^\s*(?:\[(\d+(?:\.\d+)?)\]\s*)?(?:\[(NEW|DESTROY|UPDATE)\]\s*)?(ipv4|ipv6)\s+\d+\s+(\S+)\s+(\d+)\s/.exec(
      line,
    );
  if (!m) return undefined;
  const seen = new Map<string, string[]>();
  for (const kv of line.matchAll(/\b(src|dst|sport|dport|packets|bytes)=(\S+)/g)) {
    const list = seen.get(kv[1] as string) ?? [];
    list.push(kv[2] as string);
    seen.set(kv[1] as string, list);
  }
  const first = (k: string): string | undefined => seen.get(k)?.[0];
  const pair = (k: string): [number, number] | undefined => {
    const v = seen.get(k);
    return v && v.length >= 2 ? [Number(v[0]), Number(v[1])] : undefined;
  };
  const src = first('src');
  const dst = first('dst');
  if (src === undefined || dst === undefined) return undefined;
  const packets = pair('packets');
  const bytes = pair('bytes');
  return {
    type: m[2] as ParsedConntrackLine['type'],
    ...(m[1] !== undefined ? { timestamp: Number(m[1]) } : {}),
    protocol: Number(m[5]),
    src,
    dst,
    sport: Number(first('sport') ?? 0),
    dport: Number(first('dport') ?? 0),
    ...(packets ? { packets } : {}),
    ...(bytes ? { bytes } : {}),
  };
}

export function toConnectionEvent(
  p: ParsedConntrackLine,
  phase: ConnectionEvent['phase'],
  now = Date.now(),
): ConnectionEvent {
  return {
    kind: 'connection',
    time: p.timestamp !== undefined ? Math.round(p.timestamp * 1000) : now,
    phase,
    protocol: p.protocol,
    src: p.src,
    dst: p.dst,
    sport: p.sport,
    dport: p.dport,
    packets: p.packets ? p.packets[0] + p.packets[1] : 0,
    bytes: p.bytes ? p.bytes[0] + p.bytes[1] : 0,
  };
}

/** Waits until the child printed nothing for a moment after starting, or exits. */
function started(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve();
    }, 150);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`conntrack -E exited at once (code ${code})`));
    };
    child.once('exit', onExit);
  });
}

export async function startConntrackEvents(opts: ConntrackEventOptions): Promise<ConntrackEvents> {
  if (!opts.netns.startsWith('sy-'))
    throw new Error(`refusing to read conntrack outside a project namespace (${opts.netns})`);
  // Only entries created from now on get counters; the sysctl exists once nf_conntrack is loaded.
  try {
    writeSysctls(opts.netns, [['net/netfilter/nf_conntrack_acct', '1']]);
  } catch (e) {
    const r = await runInNetns(opts.netns, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_acct=1']);
    if (r.code !== 0) throw new Error(`cannot enable conntrack accounting: ${errorMessage(e)}`, { cause: e });
  }
  const child = spawnInNetns({
    netns: opts.netns,
    argv: ['conntrack', '-E', '-e', 'NEW,DESTROY', '-o', 'timestamp,extended'],
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let buffer = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (!line.trim()) continue;
      const p = parseConntrackLine(line);
      if (!p) {
        opts.onError?.(`unparsed conntrack line: ${line}`);
        continue;
      }
      if (p.type === 'DESTROY') opts.onEvent(toConnectionEvent(p, 'end'));
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    // conntrack announces itself on stderr when it exits; anything else is worth hearing about.
    for (const l of chunk.split('\n'))
      if (l.trim() && !/flow events have been shown/.test(l)) opts.onError?.(l);
  });
  child.on('error', (e) => opts.onError?.(`conntrack: ${e.message}`));
  await started(child);

  let timer: NodeJS.Timeout | undefined;
  let listing: Promise<void> | undefined;
  if (opts.updateIntervalMs && opts.updateIntervalMs > 0) {
    timer = setInterval(() => {
      if (listing) return;
      listing = (async () => {
        const r = await runInNetns(opts.netns, 'conntrack', ['-L', '-o', 'extended']);
        const now = Date.now();
        for (const line of r.stdout.split('\n')) {
          const p = line.trim() ? parseConntrackLine(line) : undefined;
          if (p) opts.onEvent(toConnectionEvent(p, 'update', now));
        }
      })()
        .catch((e: Error) => opts.onError?.(`conntrack -L: ${e.message}`))
        .finally(() => (listing = undefined));
    }, opts.updateIntervalMs);
    timer.unref();
  }

  return {
    async stop() {
      if (timer) clearInterval(timer);
      await listing;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 1000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
