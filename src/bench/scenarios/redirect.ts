/**
 * Pod-to-pod request/response latency on one node: the routed path (pod → host veth → the node's
 * IP stack: routing, forwarding, neighbour → other host veth → pod) against bpf_redirect_peer,
 * where a tcx ingress program on each pod's host veth looks the destination pod up in a map,
 * rewrites the MACs and hands the packet straight to the destination pod's eth0, skipping the
 * node's stack and the second veth hop.
 *
 * One thread drives both ends of a UDP ping-pong with blocking libc calls: on a veth pair the
 * receive side runs in softirq on the sending CPU before send() returns, so each round trip is
 * two trips through the path plus four system calls, without scheduler wake-ups (which on a
 * shared machine would be most of the time and most of the noise). The two modes alternate in
 * rounds so a change in machine load hits both.
 */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import {
  Assembler,
  attachTcx,
  BpfMap,
  codecs,
  Program,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R7,
  R10,
  resolveIfindex,
  withNetns as withNetnsBpf,
  type AssembledProgram,
  type Link,
} from '../../bpf/index.js';
import { SKB, TCX } from '../../dataplane/ebpf/layout.js';
import { check, libc } from '../../netns/libc.js';
import { withNetns } from '../../netns/setns.js';
import { summarize } from '../stats.js';
import type { BenchScenarioResult } from '../results.js';
import type { BenchContext, BenchScenario } from '../types.js';
import { parseMac } from './support/frames.js';
import { BenchNetns, benchTag } from './support/netns.js';
import { buildNodeTopology, type BenchPod } from './support/topology.js';

export interface RedirectOptions {
  /** Alternating rounds; each measures both modes. */
  rounds: number;
  /** Round trips per mode and round (each one a sample). */
  roundTrips: number;
  payload: number;
}

export function redirectOptions(quick: boolean): RedirectOptions {
  return quick ? { rounds: 5, roundTrips: 1000, payload: 64 } : { rounds: 10, roundTrips: 5000, payload: 64 };
}

const PODS: readonly BenchPod[] = [
  { role: 'a', address: '198.18.0.2', hostInterface: 'syb00000000a1', mac: '02:00:5e:12:00:0a' },
  { role: 'b', address: '198.18.0.3', hostInterface: 'syb00000000b1', mac: '02:00:5e:12:00:0b' },
];
const CLIENT_PORT = 40_000;
const SERVER_PORT = 7_777;
const SO_RCVTIMEO = 20;
const SOL_SOCKET = 1;
const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** Destination pod address → its host veth's ifindex (in the node) and its eth0 MAC. */
const peerValue = codecs.struct({ ifindex: codecs.u32, mac: codecs.bytes(6), pad: codecs.u16 });
const PEERS = 'peers';

/**
 * tcx ingress on a pod's host veth: an IPv4 packet to a pod of this node gets Ethernet addresses
 * as if the node had routed it (source = the host veth MAC every pod's gateway entry knows) and
 * goes to the ingress of that pod's eth0. Anything else continues up the node's stack.
 */
function redirectProgram(): AssembledProgram {
  const v = peerValue.offsets;
  return (
    new Assembler()
      .mov64(R6, R1)
      .ldxw(R2, R6, SKB.data)
      .ldxw(R3, R6, SKB.dataEnd)
      .mov64(R4, R2)
      .add64(R4, 34)
      .jgt(R4, R3, 'pass')
      .ldxh(R5, R2, 12)
      .jne(R5, 0x0008, 'pass') // EtherType IPv4, as a little-endian load sees it
      .ldxw(R5, R2, 30) // IPv4 destination
      .stx('w', R10, -4, R5)
      .ldMap(R1, PEERS)
      .mov64(R2, R10)
      .add64(R2, -4)
      .call('map_lookup_elem')
      .jeq(R0, 0, 'pass')
      .ldxw(R7, R0, v.ifindex)
      // The helper call invalidated every packet pointer: load and check them again.
      .ldxw(R2, R6, SKB.data)
      .ldxw(R3, R6, SKB.dataEnd)
      .mov64(R4, R2)
      .add64(R4, 14)
      .jgt(R4, R3, 'pass')
      .ldxw(R1, R0, v.mac)
      .stx('w', R2, 0, R1)
      .ldxh(R1, R0, v.mac + 4)
      .stx('h', R2, 4, R1)
      .st('w', R2, 6, 0xeeeeeeee | 0)
      .st('h', R2, 10, 0xeeee)
      .mov64(R1, R7)
      .mov64(R2, 0)
      .call('redirect_peer')
      .exit()
      .label('pass')
      .exitWith(TCX.NEXT)
      .assemble()
  );
}

function sockaddr(address: string, port: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_INET, 0);
  sa.writeUInt16BE(port, 2);
  address.split('.').forEach((octet, i) => sa.writeUInt8(Number(octet), 4 + i));
  return sa;
}

/** A UDP socket in `netns` bound to `port` and connected to `peer`, receives time out after 1 s. */
function connectedUdp(netns: string, port: number, peer: string, peerPort: number): number {
  const c = libc();
  return withNetns(netns, () => {
    const fd = check(c.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket');
    try {
      const timeout = Buffer.alloc(16);
      timeout.writeBigInt64LE(1n, 0);
      check(c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, 16), 'SO_RCVTIMEO');
      check(c.bind(fd, sockaddr('0.0.0.0', port), 16), `bind ${port} in ${netns}`);
      check(c.connect(fd, sockaddr(peer, peerPort), 16), `connect ${peer}:${peerPort}`);
      return fd;
    } catch (e) {
      c.close(fd);
      throw e;
    }
  });
}

/**
 * How many times this thread has been put on a CPU (third field of its schedstat): when it moves
 * during a round trip, the scheduler ran something else in between.
 */
class ScheduleCount {
  private readonly fd = openSync('/proc/thread-self/schedstat', 'r');
  private readonly buf = Buffer.alloc(128);

  read(): number {
    const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
    return Number(this.buf.toString('latin1', 0, n).split(' ')[2]);
  }

  close(): void {
    closeSync(this.fd);
  }
}

interface PingPongResult {
  /** µs per round trip the thread ran through without being descheduled. */
  samples: number[];
  /** Round trips left out because the scheduler interrupted their batch. */
  interrupted: number;
}

/** Round trips between two reads of the schedule count: reading it costs more than a round trip. */
const BATCH = 16;

function pingPong(client: number, server: number, roundTrips: number, payload: number): PingPongResult {
  const c = libc();
  const out = Buffer.alloc(payload, 0x5a);
  const inbox = Buffer.alloc(2048);
  const schedule = new ScheduleCount();
  const result: PingPongResult = { samples: [], interrupted: 0 };
  const batch: number[] = [];
  try {
    for (let done = 0; done < roundTrips; done += batch.length) {
      batch.length = 0;
      const before = schedule.read();
      for (let i = 0; i < Math.min(BATCH, roundTrips - done); i++) {
        const start = process.hrtime.bigint();
        if (c.send(client, out, payload, 0) !== payload) throw new Error('ping: send failed');
        if (c.recv(server, inbox, inbox.length, 0) !== payload)
          throw new Error('ping lost (1 s without an answer)');
        if (c.send(server, out, payload, 0) !== payload) throw new Error('pong: send failed');
        if (c.recv(client, inbox, inbox.length, 0) !== payload)
          throw new Error('pong lost (1 s without an answer)');
        batch.push(Number(process.hrtime.bigint() - start) / 1000);
      }
      if (schedule.read() === before) result.samples.push(...batch);
      else result.interrupted += batch.length;
    }
  } finally {
    schedule.close();
  }
  return result;
}

/** Datagrams the node's IP stack forwarded so far (/proc/net/snmp of the node namespace). */
function forwarded(netns: string): number {
  return withNetns(netns, () => {
    const lines = readFileSync('/proc/thread-self/net/snmp', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('Ip:'));
    const head = (lines[0] ?? '').split(/\s+/);
    const values = (lines[1] ?? '').split(/\s+/);
    return Number(values[head.indexOf('ForwDatagrams')]);
  });
}

interface RedirectData {
  /** µs per round trip, by mode. */
  samples: { routed: number[]; redirect: number[] };
  /** Datagrams the node's stack forwarded during each mode's rounds. */
  forwardedDuringRouted: number;
  forwardedDuringRedirect: number;
  /** Round trips left out because the scheduler interrupted their batch. */
  interrupted: number;
}

type PeerMap = BpfMap<string, { ifindex: number; mac: Buffer; pad: number }>;

/** The map of pods (address → host veth, MAC) and the tcx program that redirects by it. */
function loadPeerRedirect(node: string): { peers: PeerMap; program: Program } {
  const peers = BpfMap.create({
    type: 'hash',
    name: 'sy_bench_peers',
    key: codecs.ipv4,
    value: peerValue,
    maxEntries: 64,
  });
  try {
    for (const pod of PODS) {
      const ifindex = withNetnsBpf(node, () => resolveIfindex({ ifname: pod.hostInterface }));
      peers.update(pod.address, { ifindex, mac: parseMac(pod.mac), pad: 0 });
    }
    const program = Program.load({
      name: 'sy_bench_peer',
      type: 'sched_cls',
      expectedAttachType: 'tcx_ingress',
      instructions: redirectProgram(),
      maps: { [PEERS]: peers },
    });
    return { peers, program };
  } catch (e) {
    peers.close();
    throw e;
  }
}

/** Rounds of routed then redirected ping-pong, the program attached only for the second half. */
function measureRounds(
  ctx: BenchContext,
  opts: RedirectOptions,
  node: string,
  ends: { client: number; server: number },
  program: Program,
): RedirectData {
  const { client, server } = ends;
  const data: RedirectData = {
    samples: { routed: [], redirect: [] },
    forwardedDuringRouted: 0,
    forwardedDuringRedirect: 0,
    interrupted: 0,
  };
  pingPong(client, server, 200, opts.payload); // neighbours, caches, JIT
  for (let round = 0; round < opts.rounds; round++) {
    let before = forwarded(node);
    const routed = pingPong(client, server, opts.roundTrips, opts.payload);
    data.samples.routed.push(...routed.samples);
    data.interrupted += routed.interrupted;
    data.forwardedDuringRouted += forwarded(node) - before;
    ctx.progress.tick(`routed ${round + 1}/${opts.rounds}`);

    const links: Link[] = withNetnsBpf(node, () =>
      PODS.map((p) => attachTcx(program, { ifname: p.hostInterface, direction: 'ingress' })),
    );
    try {
      pingPong(client, server, 20, opts.payload);
      before = forwarded(node);
      const redirected = pingPong(client, server, opts.roundTrips, opts.payload);
      data.samples.redirect.push(...redirected.samples);
      data.interrupted += redirected.interrupted;
      data.forwardedDuringRedirect += forwarded(node) - before;
    } finally {
      for (const l of links) l.close(); // the last reference: detaches
    }
    ctx.progress.tick(`redirect-peer ${round + 1}/${opts.rounds}`);
  }
  return data;
}

function redirectResult(opts: RedirectOptions, data: RedirectData): BenchScenarioResult {
  const { samples, interrupted, forwardedDuringRouted, forwardedDuringRedirect } = data;
  if (samples.routed.length === 0 || samples.redirect.length === 0)
    throw new Error(
      `every round trip was interrupted by the scheduler (${interrupted}): the machine is too busy`,
    );
  if (forwardedDuringRedirect > 0)
    throw new Error(
      `redirect-peer rounds still went through the node's stack (${forwardedDuringRedirect} datagrams forwarded)`,
    );
  const params = { payload: opts.payload, protocol: 'UDP' };
  return {
    name: 'redirect',
    unit: 'µs',
    better: 'lower',
    rows: [summarize('routed', params, samples.routed), summarize('redirect-peer', params, samples.redirect)],
    notes: [
      `per round trip (one sample each, ${opts.rounds} alternating rounds of ${opts.roundTrips}): ${opts.payload}-byte UDP ping-pong between two pods of one node, both ends driven by one thread with blocking send/recv (no wake-ups), so each figure is two one-way trips plus four system calls and the timer`,
      `routed: the lab path (pod → host veth → node routing/forwarding → host veth → pod); the node forwarded ${(forwardedDuringRouted / (opts.rounds * opts.roundTrips)).toFixed(2)} datagrams per round trip`,
      `redirect-peer: a tcx ingress program on both host veths (map lookup of the destination pod, MAC rewrite, bpf_redirect_peer into its eth0); the node forwarded ${forwardedDuringRedirect} datagrams in those rounds (${forwardedDuringRouted} in the routed ones). TTL is not decremented`,
      `no policy and no netfilter rules on the node in either mode; wall-clock time of a single thread, and round trips are timed in batches of ${BATCH}: a batch during which the scheduler took the thread off its CPU (schedstat) is left out: ${interrupted} of ${2 * opts.rounds * opts.roundTrips}`,
    ],
  };
}

export async function runRedirect(ctx: BenchContext, opts: RedirectOptions): Promise<BenchScenarioResult> {
  ctx.progress.total(opts.rounds * 2);
  const ns = new BenchNetns(benchTag('rd'));
  const node = ns.name('node');
  const c = libc();
  const fds: number[] = [];
  let redirect: { peers: PeerMap; program: Program } | undefined;
  let data: RedirectData;
  try {
    await buildNodeTopology(ns, { pods: PODS, sender: false });
    const [a, b] = PODS as [BenchPod, BenchPod];
    const client = connectedUdp(ns.name(a.role), CLIENT_PORT, b.address, SERVER_PORT);
    fds.push(client);
    const server = connectedUdp(ns.name(b.role), SERVER_PORT, a.address, CLIENT_PORT);
    fds.push(server);
    redirect = loadPeerRedirect(node);
    data = measureRounds(ctx, opts, node, { client, server }, redirect.program);
  } finally {
    for (const fd of fds) c.close(fd);
    redirect?.program.close();
    redirect?.peers.close();
    await ns.destroy();
  }
  return redirectResult(opts, data);
}

export const scenario: BenchScenario = {
  name: 'redirect',
  description:
    'pod-to-pod request/response latency on one node: routed path vs a tcx program with bpf_redirect_peer',
  run: (ctx) => runRedirect(ctx, redirectOptions(ctx.quick)),
};
