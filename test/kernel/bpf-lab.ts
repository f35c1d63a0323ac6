/**
 * Throwaway kernel fixtures for the src/bpf kernel tests: namespaces named sy-bpft-*, veth pairs
 * between them, cgroups under <cgroup2>/switchyard/bpft-*, and small Node programs run inside a
 * namespace to move real packets. Everything here is created by the tests and removed by them.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

export function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** A short tag unique to this test process, for names that must not collide across runs. */
export const RUN_TAG = String(process.pid % 100000);

export class TestNetns {
  private constructor(readonly name: string) {}

  /** Creates sy-bpft-<label>-<pid> with loopback up. */
  static create(label: string): TestNetns {
    const name = `sy-bpft-${label}-${RUN_TAG}`;
    if (existsSync(`/run/netns/${name}`)) run('ip', ['netns', 'del', name]);
    run('ip', ['netns', 'add', name]);
    run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return new TestNetns(name);
  }

  ip(...args: string[]): string {
    return run('ip', ['-n', this.name, ...args]);
  }

  delete(): void {
    if (existsSync(`/run/netns/${this.name}`)) run('ip', ['netns', 'del', this.name]);
  }
}

export interface VethEnd {
  netns: TestNetns;
  ifname: string;
  /** CIDR, from 198.18.0.0/15. */
  address: string;
}

/** A veth pair created directly inside the two namespaces (never in the root namespace). */
export function createVethPair(a: VethEnd, b: VethEnd): void {
  a.netns.ip('link', 'add', a.ifname, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.netns.name);
  for (const end of [a, b]) {
    end.netns.ip('addr', 'add', end.address, 'dev', end.ifname);
    end.netns.ip('link', 'set', end.ifname, 'up');
  }
}

/** A Node process inside a namespace (ip netns exec execs, so the pid is node's own). */
export class NetnsProcess {
  private stdout = '';
  private stderr = '';
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  /** Resolves once stdout contains `text`. */
  async waitFor(text: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stdout.includes(text)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for '${text}'; stderr: ${this.stderr}`);
      if (this.child.exitCode !== null)
        throw new Error(`process exited (${this.child.exitCode}) before '${text}': ${this.stderr}`);
      await sleep(10);
    }
  }

  /** The last stdout line parsed as JSON, after the process exits. */
  async result<T>(timeoutMs = 30_000): Promise<T> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    const last = this.stdout.trim().split('\n').at(-1) ?? '';
    if (code !== 0) throw new Error(`process failed (${code}): ${this.stderr || this.stdout}`);
    return JSON.parse(last) as T;
  }

  output(): { stdout: string; stderr: string } {
    return { stdout: this.stdout, stderr: this.stderr };
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs an ES module snippet with node inside `netns`; `args` arrive as JSON in process.argv[2]. */
export function nodeInNetns(netns: TestNetns, script: string, args: unknown = {}): NetnsProcess {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      netns.name,
      process.execPath,
      '--input-type=module',
      '-e',
      script,
      JSON.stringify(args),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return new NetnsProcess(child);
}

/**
 * Counts UDP datagrams carrying a 4-byte sequence number; prints "ready" once bound and a JSON
 * summary on SIGTERM or after `expected` datagrams.
 */
export const UDP_RECEIVER = `
import dgram from 'node:dgram';
const { port, expected } = JSON.parse(process.argv.at(-1));
const seen = new Set();
let count = 0;
// A larger buffer (capped by net.core.rmem_max) rides out scheduling hiccups on a busy host.
const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
const finish = () => { console.log(JSON.stringify({ count, unique: seen.size })); process.exit(0); };
socket.on('message', (msg) => {
  count++;
  if (msg.length >= 4) seen.add(msg.readUInt32BE(0));
  if (expected && seen.size >= expected) finish();
});
process.on('SIGTERM', finish);
socket.bind(port, '0.0.0.0', () => console.log('ready'));
`;

/** Sends `count` datagrams (4-byte sequence numbers), `perTick` every millisecond, from `sourcePort`. */
export const UDP_SENDER = `
import dgram from 'node:dgram';
const { host, port, count, perTick, sourcePort } = JSON.parse(process.argv.at(-1));
const socket = dgram.createSocket('udp4');
let sent = 0;
let acked = 0;
const tick = () => {
  for (let i = 0; i < perTick && sent < count; i++) {
    const msg = Buffer.alloc(32);
    msg.writeUInt32BE(sent++, 0);
    socket.send(msg, port, host, (err) => {
      if (err) { console.error(err.message); process.exit(1); }
      if (++acked === count) { console.log(JSON.stringify({ sent: acked })); socket.close(); }
    });
  }
  if (sent < count) setTimeout(tick, 1);
};
socket.bind(sourcePort ?? 0, () => tick());
`;

export interface UdpExchange {
  sent: number;
  received: number;
  unique: number;
}

/** Receiver in `to`, sender in `from`; waits `settleMs` after the last datagram left. */
export async function udpExchange(
  from: TestNetns,
  to: TestNetns,
  options: {
    host: string;
    port: number;
    count: number;
    perTick?: number;
    sourcePort?: number;
    settleMs?: number;
    expectAll?: boolean;
  },
  whileSending?: () => Promise<void>,
): Promise<UdpExchange> {
  const receiver = nodeInNetns(to, UDP_RECEIVER, {
    port: options.port,
    expected: options.expectAll ? options.count : 0,
  });
  try {
    await receiver.waitFor('ready');
    const sender = nodeInNetns(from, UDP_SENDER, {
      host: options.host,
      port: options.port,
      count: options.count,
      perTick: options.perTick ?? 10,
      sourcePort: options.sourcePort,
    });
    const during = whileSending?.();
    const { sent } = await sender.result<{ sent: number }>();
    await during;
    if (!options.expectAll) {
      await sleep(options.settleMs ?? 300);
      receiver.child.kill('SIGTERM');
    } else {
      setTimeout(() => receiver.child.kill('SIGTERM'), options.settleMs ?? 3000).unref();
    }
    const { count, unique } = await receiver.result<{ count: number; unique: number }>();
    return { sent, received: count, unique };
  } finally {
    receiver.kill();
  }
}

/** Where the cgroup v2 hierarchy is mounted (hybrid hosts: /sys/fs/cgroup/unified). */
export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, target, type] = line.split(' ');
    if (type === 'cgroup2' && target) return target;
  }
  throw new Error('no cgroup2 mount in /proc/mounts');
}

export class TestCgroup {
  private constructor(readonly path: string) {}

  /** <cgroup2>/switchyard/bpft-<label>-<pid> */
  static create(label: string): TestCgroup {
    const path = join(cgroup2Mount(), 'switchyard', `bpft-${label}-${RUN_TAG}`);
    mkdirSync(path, { recursive: true });
    return new TestCgroup(path);
  }

  /** Removes the cgroup once its processes have exited. */
  async remove(): Promise<void> {
    for (let attempt = 0; attempt < 50 && existsSync(this.path); attempt++) {
      try {
        rmdirSync(this.path);
      } catch {
        await sleep(50);
      }
    }
  }
}

/** Ethernet + IPv4 + UDP bytes, enough for programs that parse headers (checksums left zero). */
export function udpPacket(
  src: string,
  dst: string,
  sourcePort: number,
  destPort: number,
  payload = Buffer.alloc(8),
): Buffer {
  const packet = Buffer.alloc(14 + 20 + 8 + payload.length);
  packet.writeUInt16BE(0x0800, 12);
  packet.writeUInt8(0x45, 14);
  packet.writeUInt16BE(20 + 8 + payload.length, 16);
  packet.writeUInt8(64, 22);
  packet.writeUInt8(17, 23);
  src.split('.').forEach((octet, i) => packet.writeUInt8(Number(octet), 26 + i));
  dst.split('.').forEach((octet, i) => packet.writeUInt8(Number(octet), 30 + i));
  packet.writeUInt16BE(sourcePort, 34);
  packet.writeUInt16BE(destPort, 36);
  packet.writeUInt16BE(8 + payload.length, 38);
  payload.copy(packet, 42);
  return packet;
}
