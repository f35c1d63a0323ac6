/**
 * A throwaway lab for the nftables kernel tests, built straight from an IR: one namespace per node
 * (sy-nft<tag>-n<i>) joined by a bridge in a fabric namespace, one per pod with a veth whose host
 * side carries the endpoint's hostInterface name, /32 routes and proxy ARP as Calico does, an
 * "outside" host on the fabric for prefilter checks, and a probe server in every pod.
 * Only 198.18.0.0/15 addresses; nothing in the root namespace.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { ReachMatrix } from '../../src/calc/api.js';
import type { Backend, NodeTarget } from '../../src/dataplane/backend.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import type { IR } from '../../src/ir/types.js';
import { runInNetns } from '../../src/dataplane/exec.js';

export function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function ipn(netns: string, ...args: string[]): string {
  return sh('ip', ['-n', netns, ...args]);
}

function sysctl(netns: string, key: string, value: string): void {
  sh('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `${key}=${value}`]);
}

export function addNetns(name: string): void {
  if (existsSync(`/run/netns/${name}`)) sh('ip', ['netns', 'del', name]);
  sh('ip', ['netns', 'add', name]);
  ipn(name, 'link', 'set', 'lo', 'up');
  // No duplicate address detection: addresses usable at once, not after a second or two.
  sysctl(name, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(name, 'net.ipv6.conf.default.accept_dad', '0');
}

export function delNetns(name: string): void {
  if (existsSync(`/run/netns/${name}`)) sh('ip', ['netns', 'del', name]);
}

/** The source address of the outside host that tests put in a prefilter. */
export const OUTSIDE_BLOCKED = '198.18.200.7';
export const OUTSIDE_ADDRESS = '198.18.255.250';
export const OUTSIDE_BLOCKED_V6 = 'fd00:5957:ffff::7';
export const OUTSIDE_ADDRESS_V6 = 'fd00:5957:ff::fa';

/** A node's fabric IPv6 address (the IR gives nodes IPv4 only). */
function nodeV6(index: number): string {
  return `fd00:5957:ff::${index + 1}`;
}

function v6Of(addresses: readonly string[]): string | undefined {
  return addresses.find((a) => a.includes(':'));
}

/** Answers TCP on every given port (accept, then close) and UDP with an echo. */
const SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const { ports } = JSON.parse(process.argv.at(-1));
let ready = 0;
const up = () => { if (++ready === ports.length * 2) console.log('ready'); };
for (const port of ports) {
  net.createServer((s) => s.end()).listen(port, '::', up);
  const u = dgram.createSocket('udp6');
  u.on('message', (m, r) => u.send(m, r.port, r.address));
  u.bind(port, '::', up);
}
`;

/** Long-running prober: reads one JSON request per stdin line, tries each target concurrently, answers one JSON line. */
const PROBER = `
import net from 'node:net';
import dgram from 'node:dgram';
import readline from 'node:readline';
import { randomUUID } from 'node:crypto';
const { source } = JSON.parse(process.argv.at(-1));
const one = (t, timeoutMs) => new Promise((resolve) => {
  if (t.protocol === 'UDP') {
    const u = dgram.createSocket(source.includes(':') ? 'udp6' : 'udp4');
    // Only this datagram's own echo counts: a late echo to an earlier socket of the same port
    // (closed after its timeout, the port picked again for the next try) must not answer this one.
    const token = Buffer.from('probe ' + randomUUID());
    let timer;
    const done = (ok) => { clearTimeout(timer); u.close(); resolve(ok); };
    u.on('message', (m) => { if (m.equals(token)) done(true); });
    u.on('error', () => done(false));
    u.bind(0, source, () => {
      timer = setTimeout(() => done(false), timeoutMs);
      u.send(token, t.port, t.host);
    });
    return;
  }
  const s = net.connect({ host: t.host, port: t.port, localAddress: source });
  const timer = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
  s.on('connect', () => { clearTimeout(timer); s.destroy(); resolve(true); });
  s.on('error', () => { clearTimeout(timer); resolve(false); });
});
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const { id, targets, timeoutMs } = JSON.parse(line);
  const results = await Promise.all(targets.map((t) => one(t, timeoutMs)));
  process.stdout.write(JSON.stringify({ id, results }) + '\\n');
});
console.log('ready');
`;

export interface ProbeTarget {
  host: string;
  port: number;
  protocol: 'TCP' | 'UDP';
}

class Prober {
  private next = 1;
  private buffer = '';
  private readonly waiting = new Map<number, (results: boolean[]) => void>();

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      this.buffer += c;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        const msg = JSON.parse(line) as { id: number; results: boolean[] };
        this.waiting.get(msg.id)?.(msg.results);
        this.waiting.delete(msg.id);
      }
    });
  }

  probe(targets: ProbeTarget[], timeoutMs: number): Promise<boolean[]> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, resolve);
      this.child.stdin?.write(JSON.stringify({ id, targets, timeoutMs }) + '\n', (err) => err && reject(err));
    });
  }
}

function nodeIn(netns: string, script: string, args: unknown): ChildProcess {
  return spawn(
    'ip',
    ['netns', 'exec', netns, process.execPath, '--input-type=module', '-e', script, JSON.stringify(args)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
}

async function waitReady(child: ChildProcess, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what}: server not ready`)), 10_000);
    child.stdout?.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`${what}: server exited ${code}`)));
  });
}

export class NftLab {
  readonly fabric: string;
  readonly outside: string;
  private readonly nodeNs = new Map<string, string>();
  private readonly podNs = new Map<string, string>();
  private readonly servers: ChildProcess[] = [];
  private readonly probers = new Map<string, Prober>();
  private readonly created: string[] = [];

  constructor(
    readonly tag: string,
    readonly ir: IR,
  ) {
    this.fabric = `sy-nft${tag}-fab`;
    this.outside = `sy-nft${tag}-out`;
    ir.nodes.forEach((n, i) => this.nodeNs.set(n.name, `sy-nft${tag}-n${i + 1}`));
    ir.endpoints.forEach((e, i) => this.podNs.set(e.id, `sy-nft${tag}-p${i + 1}`));
  }

  target(node: string): NodeTarget {
    return { scope: `nft${this.tag}`, node, netns: this.netnsOf(node) };
  }

  netnsOf(node: string): string {
    const ns = this.nodeNs.get(node);
    if (!ns) throw new Error(`no node ${node}`);
    return ns;
  }

  private make(name: string): void {
    addNetns(name);
    this.created.push(name);
  }

  async up(ports: number[] = [80, 81]): Promise<void> {
    this.make(this.fabric);
    ipn(this.fabric, 'link', 'add', 'br0', 'type', 'bridge');
    ipn(this.fabric, 'link', 'set', 'br0', 'up');
    const attach = (ns: string, inner: string, outer: string, address: string): void => {
      ipn(this.fabric, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', inner, 'netns', ns);
      ipn(this.fabric, 'link', 'set', outer, 'master', 'br0', 'up');
      ipn(ns, 'addr', 'add', address, 'dev', inner);
      ipn(ns, 'link', 'set', inner, 'up');
    };
    const dual = this.ir.endpoints.some((e) => v6Of(e.addresses));
    this.ir.nodes.forEach((n, i) => {
      const ns = this.netnsOf(n.name);
      this.make(ns);
      sysctl(ns, 'net.ipv4.ip_forward', '1');
      attach(ns, 'fab0', `n${i + 1}`, `${n.address}/24`);
      ipn(ns, 'route', 'add', '198.18.200.0/24', 'via', OUTSIDE_ADDRESS);
      if (dual) {
        sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
        ipn(ns, '-6', 'addr', 'add', `${nodeV6(i)}/64`, 'dev', 'fab0');
        ipn(ns, '-6', 'route', 'add', 'fd00:5957:ffff::/48', 'via', OUTSIDE_ADDRESS_V6);
      }
    });
    this.make(this.outside);
    attach(this.outside, 'fab0', 'out', `${OUTSIDE_ADDRESS}/24`);
    ipn(this.outside, 'addr', 'add', `${OUTSIDE_BLOCKED}/32`, 'dev', 'lo');
    if (dual) {
      ipn(this.outside, '-6', 'addr', 'add', `${OUTSIDE_ADDRESS_V6}/64`, 'dev', 'fab0');
      ipn(this.outside, '-6', 'addr', 'add', `${OUTSIDE_BLOCKED_V6}/128`, 'dev', 'lo');
    }

    for (const ep of this.ir.endpoints) {
      const pns = this.podNs.get(ep.id) as string;
      const nns = this.netnsOf(ep.node);
      const addr = ep.addresses[0] as string;
      this.make(pns);
      ipn(nns, 'link', 'add', ep.hostInterface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pns);
      ipn(nns, 'link', 'set', ep.hostInterface, 'up');
      sysctl(nns, `net.ipv4.conf.${ep.hostInterface}.proxy_arp`, '1');
      // Proxy ARP answers after a random delay of up to 0.8 s by default: longer than a probe waits.
      sysctl(nns, `net.ipv4.neigh.${ep.hostInterface}.proxy_delay`, '0');
      ipn(nns, 'route', 'add', `${addr}/32`, 'dev', ep.hostInterface);
      ipn(pns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
      ipn(pns, 'link', 'set', 'eth0', 'up');
      ipn(pns, 'route', 'add', 'default', 'dev', 'eth0');
      const nodeAddress = this.ir.nodes.find((n) => n.name === ep.node)?.address as string;
      ipn(this.outside, 'route', 'add', `${addr}/32`, 'via', nodeAddress);
      for (const other of this.ir.nodes) {
        if (other.name !== ep.node)
          ipn(this.netnsOf(other.name), 'route', 'add', `${addr}/32`, 'via', nodeAddress);
      }
      const v6 = v6Of(ep.addresses);
      if (v6) {
        // Pods reach the node through a link-local gateway on every host-side veth, as Calico does.
        const nodeIndex = this.ir.nodes.findIndex((n) => n.name === ep.node);
        ipn(nns, '-6', 'addr', 'add', 'fe80::1/64', 'dev', ep.hostInterface);
        ipn(nns, '-6', 'route', 'add', `${v6}/128`, 'dev', ep.hostInterface);
        ipn(pns, '-6', 'addr', 'add', `${v6}/128`, 'dev', 'eth0');
        ipn(pns, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0');
        ipn(this.outside, '-6', 'route', 'add', `${v6}/128`, 'via', nodeV6(nodeIndex));
        this.ir.nodes.forEach((other) => {
          if (other.name !== ep.node)
            ipn(this.netnsOf(other.name), '-6', 'route', 'add', `${v6}/128`, 'via', nodeV6(nodeIndex));
        });
      }
      const server = nodeIn(pns, SERVER, { ports });
      this.servers.push(server);
      await waitReady(server, ep.id);
      await this.startProber(pns, addr);
      if (v6) await this.startProber(pns, v6);
    }
    await this.startProber(this.outside, OUTSIDE_ADDRESS);
    await this.startProber(this.outside, OUTSIDE_BLOCKED);
    if (dual) {
      await this.startProber(this.outside, OUTSIDE_ADDRESS_V6);
      await this.startProber(this.outside, OUTSIDE_BLOCKED_V6);
    }
  }

  private async startProber(netns: string, source: string): Promise<Prober> {
    const child = nodeIn(netns, PROBER, { source });
    this.servers.push(child);
    const prober = new Prober(child);
    await waitReady(child, `prober in ${netns}`);
    this.probers.set(`${netns}|${source}`, prober);
    return prober;
  }

  /**
   * Tries every target from `source` in `netns` (a pod, or the outside host with OUTSIDE_ADDRESS
   * or OUTSIDE_BLOCKED). Under load a probe can time out spuriously, never succeed spuriously, so
   * failures are tried again with a longer wait before they count as denied.
   */
  async probe(netns: string, source: string, targets: ProbeTarget[], timeoutMs = 300): Promise<boolean[]> {
    const prober = this.probers.get(`${netns}|${source}`);
    if (!prober) throw new Error(`no prober for ${source} in ${netns}`);
    const results = await prober.probe(targets, timeoutMs);
    const retry = targets.filter((_, i) => !results[i]);
    if (retry.length === 0) return results;
    const again = await prober.probe(retry, Math.max(1000, timeoutMs * 3));
    let k = 0;
    return results.map((ok) => ok || (again[k++] ?? false));
  }

  podNetns(endpoint: string): string {
    return this.podNs.get(endpoint) as string;
  }

  /** The real pod×pod matrix, every source probing all destinations at once. */
  async reach(
    port: number,
    protocol: 'TCP' | 'UDP',
    family: 4 | 6 = 4,
  ): Promise<Omit<ReachMatrix, 'outcomes'>> {
    const eps = this.ir.endpoints;
    const pick = (a: readonly string[]): string => (family === 4 ? (a[0] as string) : (v6Of(a) as string));
    const rows = await Promise.all(
      eps.map((src) =>
        this.probe(
          this.podNs.get(src.id) as string,
          pick(src.addresses),
          eps.map((dst) => ({ host: pick(dst.addresses), port, protocol })),
        ),
      ),
    );
    const results: ReachMatrix['results'] = {};
    eps.forEach((src, i) => {
      const row: Record<string, boolean> = {};
      eps.forEach((dst, j) => (row[dst.id] = rows[i]?.[j] ?? false));
      results[src.id] = row;
    });
    return { port, protocol, results };
  }

  down(): void {
    for (const s of this.servers) if (s.exitCode === null) s.kill('SIGKILL');
    for (const ns of [...this.created].reverse()) delNetns(ns);
  }
}

/** Pairs where two matrices disagree, as `src -> dst: expected X got Y` lines. */
export function matrixDiff(
  expected: Pick<ReachMatrix, 'results'>,
  actual: Pick<ReachMatrix, 'results'>,
): string[] {
  const out: string[] = [];
  for (const [src, row] of Object.entries(expected.results)) {
    for (const [dst, want] of Object.entries(row)) {
      const got = actual.results[src]?.[dst];
      if (got !== want)
        out.push(
          `${src} -> ${dst}: expected ${want ? 'allowed' : 'denied'}, got ${got ? 'allowed' : 'denied'}`,
        );
    }
  }
  return out;
}

/** The table as comparable data: sets and maps by name, chains by name with rules in order, no handles or counters. */
export async function kernelState(target: NodeTarget): Promise<Record<string, unknown>> {
  const r = await runInNetns(target.netns, 'nft', ['-j', '-s', 'list', 'table', 'inet', 'switchyard']);
  if (r.code !== 0) return { absent: r.stderr.trim() };
  const items = (JSON.parse(r.stdout) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
  const out: Record<string, unknown> = {};
  for (const item of items) {
    const [kind, body] = Object.entries(item)[0] as [string, Record<string, unknown>];
    if (kind === 'metainfo' || kind === 'table') continue;
    const { handle: _h, ...rest } = body;
    if (kind === 'rule') {
      const key = `chain:${String(rest.chain)}:rules`;
      ((out[key] ??= []) as unknown[]).push(rest);
    } else out[`${kind}:${String(rest.name)}`] = rest;
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * An nftables backend that notes which applies went as a rule batch over nfnetlink rather than
 * an nft script: each batch it writes adds the step named last with `step` to `batched`.
 */
export function batchRecordingBackend(): {
  backend: Backend;
  batched: string[];
  step: (name: string) => void;
} {
  const batched: string[] = [];
  let current = '';
  const backend = createNftablesBackend({
    mutateBatch: (messages) => {
      batched.push(current);
      return messages;
    },
  });
  return { backend, batched, step: (name) => (current = name) };
}
