/**
 * A small lab for the iptables kernel tests, built straight from an IR until the shared lab
 * (src/lab) can be used: one namespace per node (`sy-ipt<tag>-n<i>`) joined over a bridge in a
 * fabric namespace, one namespace per pod whose veth's node side carries the endpoint's
 * hostInterface name (/32 route to it, proxy ARP, Calico-style), an outside host on the fabric
 * (for prefilter checks) and a TCP/UDP server on every pod. 198.18.0.0/15 only; the root namespace
 * is never touched.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Protocol } from '../../src/ir/types.js';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import type { IR } from '../../src/ir/types.js';

export function sh(cmd: string, args: string[], input?: string): string {
  try {
    // Large enough for iptables-save of a 10000-rule decision table.
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      input: input ?? '',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 256 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** Runs a command inside a project namespace (never the root one). */
export function inNs(netns: string, cmd: string, args: string[], input?: string): string {
  if (!netns.startsWith('sy-')) throw new Error(`not a project namespace: ${netns}`);
  return sh('ip', ['netns', 'exec', netns, cmd, ...args], input);
}

function ipn(netns: string, ...args: string[]): void {
  sh('ip', ['-n', netns, ...args]);
}

function sysctl(netns: string, key: string, value: string): void {
  inNs(netns, 'sysctl', ['-qw', `${key}=${value}`]);
}

export function deleteNamespaces(prefix: string): void {
  if (!prefix.startsWith('sy-ipt')) throw new Error(`refusing to delete namespaces ${prefix}*`);
  const names = sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
  for (const n of names) if (existsSync(`/run/netns/${n}`)) sh('ip', ['netns', 'del', n]);
}

export const OUTSIDE_ADDRESS = '198.18.255.250';
/** A second outside source, for deny-listing in prefilters. */
export const OUTSIDE_LISTED = '198.18.200.7';

const SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const ports = JSON.parse(process.argv.at(-1));
let ready = 0;
const up = () => { if (++ready === ports.length * 2) console.log('ready'); };
for (const port of ports) {
  net.createServer((s) => { s.on('error', () => {}); s.on('data', (d) => s.write(d)); s.on('end', () => s.end()); }).listen(port, '0.0.0.0', up);
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(m, r.port, r.address));
  u.bind(port, '0.0.0.0', up);
}
`;

const PROBE = `
import net from 'node:net';
import dgram from 'node:dgram';
const { targets, timeoutMs, source } = JSON.parse(process.argv.at(-1));
const one = (t) => new Promise((resolve) => {
  if (t.protocol === 'UDP') {
    const u = dgram.createSocket('udp4');
    const done = (ok) => { clearTimeout(timer); try { u.close(); } catch {} resolve(ok); };
    const timer = setTimeout(() => done(false), timeoutMs);
    u.on('message', () => done(true));
    u.on('error', () => done(false));
    u.bind(0, source, () => u.send(Buffer.from('probe'), t.port, t.host));
    return;
  }
  const s = net.connect({ host: t.host, port: t.port, localAddress: source });
  const timer = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
  s.on('connect', () => { clearTimeout(timer); s.destroy(); resolve(true); });
  s.on('error', () => { clearTimeout(timer); resolve(false); });
});
console.log(JSON.stringify(await Promise.all(targets.map(one))));
`;

function nodeScript(netns: string, script: string, arg: unknown): ChildProcess {
  return spawn(
    'ip',
    ['netns', 'exec', netns, process.execPath, '--input-type=module', '-e', script, JSON.stringify(arg)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
}

function output(child: ChildProcess): Promise<string> {
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (err += c));
  return new Promise((resolve, reject) =>
    child.on('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`probe exited ${code}: ${err}`)),
    ),
  );
}

export interface Target {
  host: string;
  port: number;
  protocol: 'TCP' | 'UDP';
}

export class IptLab {
  readonly prefix: string;
  readonly fabric: string;
  readonly outside: string;
  private readonly nodeNs = new Map<string, string>();
  private readonly podNs = new Map<string, string>();
  private readonly servers: ChildProcess[] = [];

  constructor(
    readonly tag: string,
    readonly ir: IR,
  ) {
    this.prefix = `sy-ipt${tag}-`;
    this.fabric = `${this.prefix}fab`;
    this.outside = `${this.prefix}out`;
    ir.nodes.forEach((n, i) => this.nodeNs.set(n.name, `${this.prefix}n${i + 1}`));
    ir.endpoints.forEach((e, i) => this.podNs.set(e.id, `${this.prefix}p${i + 1}`));
  }

  target(node: string): NodeTarget {
    return { scope: `ipt${this.tag}`, node, netns: this.netnsOf(node) };
  }

  targets(): NodeTarget[] {
    return this.ir.nodes.map((n) => this.target(n.name));
  }

  netnsOf(node: string): string {
    const ns = this.nodeNs.get(node);
    if (!ns) throw new Error(`no node ${node}`);
    return ns;
  }

  podNetns(endpoint: string): string {
    const ns = this.podNs.get(endpoint);
    if (!ns) throw new Error(`no pod ${endpoint}`);
    return ns;
  }

  address(endpoint: string): string {
    const a = this.ir.endpoints.find((e) => e.id === endpoint)?.addresses[0];
    if (!a) throw new Error(`no address for ${endpoint}`);
    return a;
  }

  private add(name: string): void {
    if (existsSync(`/run/netns/${name}`)) sh('ip', ['netns', 'del', name]);
    sh('ip', ['netns', 'add', name]);
    ipn(name, 'link', 'set', 'lo', 'up');
  }

  async up(ports: number[] = [80, 81]): Promise<void> {
    deleteNamespaces(this.prefix);
    this.add(this.fabric);
    ipn(this.fabric, 'link', 'add', 'br0', 'type', 'bridge');
    ipn(this.fabric, 'link', 'set', 'br0', 'up');
    const nodeAddr = new Map(this.ir.nodes.map((n) => [n.name, n.address]));
    let port = 0;
    const plug = (ns: string, address: string): void => {
      const outer = `f${port++}`;
      ipn(this.fabric, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', 'fab0', 'netns', ns);
      ipn(this.fabric, 'link', 'set', outer, 'master', 'br0', 'up');
      ipn(ns, 'addr', 'add', `${address}/24`, 'dev', 'fab0');
      ipn(ns, 'link', 'set', 'fab0', 'up');
    };
    for (const [node, ns] of this.nodeNs) {
      this.add(ns);
      sysctl(ns, 'net.ipv4.ip_forward', '1');
      sysctl(ns, 'net.ipv4.conf.all.rp_filter', '0');
      sysctl(ns, 'net.ipv4.conf.default.rp_filter', '0');
      plug(ns, nodeAddr.get(node) as string);
      ipn(ns, 'route', 'add', `${OUTSIDE_LISTED}/32`, 'via', OUTSIDE_ADDRESS);
    }
    this.add(this.outside);
    plug(this.outside, OUTSIDE_ADDRESS);
    ipn(this.outside, 'addr', 'add', `${OUTSIDE_LISTED}/32`, 'dev', 'lo');
    for (const e of this.ir.endpoints) {
      const pod = this.podNetns(e.id);
      const node = this.netnsOf(e.node);
      const addr = this.address(e.id);
      this.add(pod);
      ipn(node, 'link', 'add', e.hostInterface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod);
      sysctl(node, `net.ipv4.conf.${e.hostInterface}.proxy_arp`, '1');
      // Proxy ARP answers are otherwise delayed up to 0.8 s, longer than a probe waits.
      sysctl(node, `net.ipv4.neigh.${e.hostInterface}.proxy_delay`, '0');
      sysctl(node, `net.ipv4.conf.${e.hostInterface}.rp_filter`, '0');
      ipn(node, 'link', 'set', e.hostInterface, 'up');
      ipn(node, 'route', 'add', `${addr}/32`, 'dev', e.hostInterface);
      ipn(pod, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
      ipn(pod, 'link', 'set', 'eth0', 'up');
      ipn(pod, 'route', 'add', 'default', 'dev', 'eth0');
      const remoteVia = nodeAddr.get(e.node) as string;
      for (const [other, ns] of this.nodeNs)
        if (other !== e.node) ipn(ns, 'route', 'add', `${addr}/32`, 'via', remoteVia);
      ipn(this.outside, 'route', 'add', `${addr}/32`, 'via', remoteVia);
    }
    await Promise.all(
      this.ir.endpoints.map(async (e) => {
        const child = nodeScript(this.podNetns(e.id), SERVER, ports);
        this.servers.push(child);
        await new Promise<void>((resolve, reject) => {
          let out = '';
          const timer = setTimeout(() => reject(new Error(`server in ${e.id} not ready`)), 15_000);
          child.stdout?.setEncoding('utf8').on('data', (c: string) => {
            out += c;
            if (out.includes('ready')) {
              clearTimeout(timer);
              resolve();
            }
          });
          child.on('exit', (code) => reject(new Error(`server in ${e.id} exited ${code}`)));
        });
      }),
    );
  }

  /** One connection attempt per target, concurrently, from a pod (or the outside host). */
  async probe(
    from: { pod: string } | { outside: string },
    targets: Target[],
    timeoutMs = 700,
  ): Promise<boolean[]> {
    const netns = 'pod' in from ? this.podNetns(from.pod) : this.outside;
    const source = 'pod' in from ? this.address(from.pod) : from.outside;
    const out = await output(nodeScript(netns, PROBE, { targets, timeoutMs, source }));
    return JSON.parse(out) as boolean[];
  }

  /** results[src][dst] for new connections, every pod pair including self. */
  async reach(port: number, protocol: Protocol): Promise<Record<string, Record<string, boolean>>> {
    if (protocol !== 'TCP' && protocol !== 'UDP')
      throw new Error(`the iptables test lab probes TCP and UDP, not ${protocol}`);
    const ids = this.ir.endpoints.map((e) => e.id);
    const rows = await Promise.all(
      ids.map((src) =>
        this.probe(
          { pod: src },
          ids.map((dst) => ({ host: this.address(dst), port, protocol })),
        ),
      ),
    );
    const results: Record<string, Record<string, boolean>> = {};
    ids.forEach((src, i) => {
      const row: Record<string, boolean> = {};
      ids.forEach((dst, j) => (row[dst] = rows[i]?.[j] ?? false));
      results[src] = row;
    });
    return results;
  }

  async down(): Promise<void> {
    for (const s of this.servers) s.kill('SIGKILL');
    this.servers.length = 0;
    deleteNamespaces(this.prefix);
  }
}

const CONNECTION = `
import net from 'node:net';
import readline from 'node:readline';
const { host, port, source } = JSON.parse(process.argv.at(-1));
const s = net.connect({ host, port, localAddress: source });
let waiting;
s.on('data', () => { if (waiting) { clearTimeout(waiting.timer); waiting.done('ok'); waiting = undefined; } });
s.on('error', (e) => console.log('error ' + e.message));
s.on('connect', () => console.log('connected'));
readline.createInterface({ input: process.stdin }).on('line', () => {
  const done = (r) => console.log(r);
  waiting = { done, timer: setTimeout(() => { waiting = undefined; done('timeout'); }, 1000) };
  s.write('ping');
});
`;

/** A TCP connection held open from a pod, to check what happens to it when policy changes. */
export class HeldConnection {
  private buffer = '';
  private readonly waiters: ((line: string) => void)[] = [];

  private constructor(private readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      this.buffer += c;
      let i;
      while ((i = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, i);
        this.buffer = this.buffer.slice(i + 1);
        this.waiters.shift()?.(line);
      }
    });
  }

  private next(): Promise<string> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  static async open(lab: IptLab, from: string, to: string, port: number): Promise<HeldConnection> {
    const child = nodeScript(lab.podNetns(from), CONNECTION, {
      host: lab.address(to),
      port,
      source: lab.address(from),
    });
    child.stdin?.on('error', () => undefined);
    const conn = new HeldConnection(child);
    const first = await conn.next();
    if (first !== 'connected') throw new Error(`connection ${from} → ${to}: ${first}`);
    return conn;
  }

  /** Sends a few bytes and reports whether the echo came back. */
  async roundTrip(): Promise<boolean> {
    const answer = this.next();
    this.child.stdin?.write('\n');
    return (await answer) === 'ok';
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}
