/**
 * The probe server of one lab: a single long-running process that holds listening sockets inside
 * every pod's namespace and answers each TCP connection and UDP datagram with the pod's
 * `namespace/name`. Started detached by `lab up`; `lab apply` makes it reload its config over a
 * control socket (SIGHUP works too); `lab down` kills it.
 */
import dgram from 'node:dgram';
import { readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { currentCgroup, moveToCgroup, netnsPath, openListeners } from '../../netns/index.js';
import {
  controlSocketPath,
  probeAnswer,
  probeConfigPath,
  type ControlRequest,
  type ControlResponse,
  type ProbePodConfig,
  type ProbeServerConfig,
} from './protocol.js';
import { errorMessage } from '../../util/errors.js';

interface OpenPod {
  /** Namespace identity + ports: a change of either means new sockets. */
  key: string;
  close: () => void;
  sockets: number;
}

function argValue(flag: string): string {
  const i = process.argv.indexOf(flag);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) throw new Error(`probe server: missing ${flag}`);
  return v;
}

const dir = argValue('--dir');
const open = new Map<string, OpenPod>();
/**
 * Where the server lives between socket creations: the cgroup it was started in, outside the
 * lab's tree, so removing the lab's cgroups never waits for the server's exit to be reaped.
 */
const home = currentCgroup();

function log(msg: string): void {
  process.stdout.write(`${new Date().toISOString()} ${msg}\n`);
}

function identity(p: ProbePodConfig): string {
  // A pod recreated under the same name lives in a new namespace: compare the nsfs inode.
  const st = statSync(netnsPath(p.netns));
  return `${st.dev}:${st.ino}:${JSON.stringify(p.ports)}`;
}

function serve(p: ProbePodConfig): OpenPod {
  const key = identity(p);
  let moved = false;
  let fds: number[];
  try {
    moveToCgroup(p.cgroup, process.pid);
    moved = true;
  } catch (e) {
    log(`pod ${p.id}: cannot join cgroup ${p.cgroup}: ${errorMessage(e)}`);
  }
  try {
    // Every port on both families: an IPv4 socket and an IPv6-only one.
    fds = openListeners(p.netns, [
      ...p.ports.map((port) => ({ ...port, family: 4 as const })),
      ...p.ports.map((port) => ({ ...port, family: 6 as const })),
    ]);
  } finally {
    if (moved) moveToCgroup(home, process.pid);
  }
  const closers: (() => void)[] = [];
  [...p.ports, ...p.ports].forEach((port, i) => {
    const fd = fds[i] as number;
    const v6 = i >= p.ports.length;
    if (port.protocol === 'TCP') {
      const server = net.createServer((conn) => {
        conn.on('error', () => undefined);
        conn.end(probeAnswer(p.id, conn.remoteAddress));
      });
      server.on('error', (e) => log(`pod ${p.id} ${port.port}/TCP: ${e.message}`));
      server.listen({ fd });
      closers.push(() => server.close());
    } else {
      const sock = dgram.createSocket(v6 ? 'udp6' : 'udp4');
      sock.on('error', (e) => log(`pod ${p.id} ${port.port}/UDP: ${e.message}`));
      sock.on('message', (_msg, from) => sock.send(probeAnswer(p.id, from.address), from.port, from.address));
      sock.bind({ fd });
      closers.push(() => sock.close());
    }
  });
  return { key, sockets: fds.length, close: () => closers.forEach((c) => c()) };
}

function reload(): ControlResponse {
  const config = JSON.parse(readFileSync(probeConfigPath(dir), 'utf8')) as ProbeServerConfig;
  const wanted = new Map(config.pods.map((p) => [p.id, p]));
  const errors: string[] = [];
  for (const [id, pod] of open) {
    const want = wanted.get(id);
    let same = false;
    try {
      same = want !== undefined && identity(want) === pod.key;
    } catch {
      // namespace gone: close
    }
    if (!same) {
      pod.close();
      open.delete(id);
    }
  }
  for (const p of config.pods) {
    if (open.has(p.id)) continue;
    try {
      open.set(p.id, serve(p));
    } catch (e) {
      errors.push(`${p.id}: ${errorMessage(e)}`);
    }
  }
  const sockets = [...open.values()].reduce((n, p) => n + p.sockets, 0);
  log(
    `serving ${open.size} pods, ${sockets} sockets${errors.length ? `; errors: ${errors.join('; ')}` : ''}`,
  );
  return {
    ok: errors.length === 0,
    pods: open.size,
    sockets,
    serving: [...open.keys()].sort(),
    ...(errors.length ? { errors } : {}),
  };
}

function handle(line: string): ControlResponse {
  try {
    const req = JSON.parse(line) as ControlRequest;
    if (req.op === 'ping') return { ok: true, pods: open.size };
    if (req.op === 'reload') return reload();
    return { ok: false, error: `unknown request ${line}` };
  } catch (e) {
    return { ok: false, error: errorMessage(e) };
  }
}

function main(): void {
  const config = JSON.parse(readFileSync(probeConfigPath(dir), 'utf8')) as ProbeServerConfig;
  reload();
  const path = controlSocketPath(dir);
  rmSync(path, { force: true });
  const control = net.createServer((conn) => {
    let buf = '';
    conn.on('error', () => undefined);
    conn.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) conn.end(JSON.stringify(handle(buf.slice(0, nl))) + '\n');
    });
  });
  control.listen(path, () => log(`probe server of lab ${config.lab} listening on ${path}`));
  process.on('SIGHUP', () => {
    try {
      reload();
    } catch (e) {
      log(`reload failed: ${errorMessage(e)}`);
    }
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

main();
