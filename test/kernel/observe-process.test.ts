import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfNotFoundError, closeFd, Link, Program } from '../../src/bpf/index.js';
import { getFdById } from '../../src/bpf/commands.js';
import { BpfCommand } from '../../src/bpf/constants.js';
import { CGROUP_DIR } from '../../src/lab/names.js';
import { cgroup2Mount, inNetnsArgv, removeCgroupTree } from '../../src/netns/index.js';
import type { KernelEvent, ProcessEvent } from '../../src/dataplane/events.js';
import { readTracepointFormat, setStateLayout } from '../../src/observe/process-program.js';
import {
  cgroupId,
  createProcessTracer,
  LOST_EVICTED,
  type ProcessTracer,
} from '../../src/observe/process-tracer.js';
import { FlowTable } from '../../src/observe/flows.js';
import { describeKernel } from '../support/kernel.js';
import { NetnsProcess, run, RUN_TAG, sleep } from './bpf-lab.js';

const NETNS = `sy-prc-${RUN_TAG}`;
const SERVER_IP = '198.18.77.1';
/** On a veth whose peer has no address: connects to 198.18.78.2 stay in SYN_SENT. */
const LOCAL_IP = '198.18.78.1';
const BLACK_HOLE = '198.18.78.2';
const OPEN_PORT = 8080;
const CLOSED_PORT = 8081;
const COMM = 'sy-prc-client';
/** Drain interval of the tracer under test (short, so the tests are quick). */
const POLL_MS = 200;

const SERVER = `
import net from 'node:net';
const { host, port } = JSON.parse(process.argv.at(-1));
net.createServer((socket) => { socket.on('error', () => {}); socket.end('hi\\n'); }).listen(port, host, () => console.log('ready'));
`;

/**
 * Connects `count` times, one after the other, from unbound sockets (the kernel picks the source
 * address and port), to `port` or, with `spread`, to port, port + 1, …; prints its pid, how each
 * connect ended, and the source addresses it saw.
 */
const CLIENT = `
import net from 'node:net';
const { host, port, count, spread, giveUpMs, title } = JSON.parse(process.argv.at(-1));
process.title = title;
const outcomes = {};
const localAddresses = new Set();
const connectOnce = (i) => new Promise((resolve) => {
  const socket = net.connect({ host, port: spread ? port + i : port });
  let timer;
  const done = (outcome) => {
    if (!timer && giveUpMs) return;
    clearTimeout(timer);
    timer = undefined;
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    socket.destroy();
    resolve();
  };
  if (giveUpMs) timer = setTimeout(() => done('gave up'), giveUpMs);
  socket.on('connect', () => { localAddresses.add(socket.localAddress); done('ok'); });
  socket.on('error', (err) => done(err.code));
});
for (let i = 0; i < count; i++) await connectOnce(i);
console.log(JSON.stringify({ pid: process.pid, outcomes, localAddresses: [...localAddresses] }));
`;

const BOTH_TCP_PORT = 8090;
const BOTH_UDP_PORT = 8091;

/** A TCP server that answers each connection and an unconnected UDP echo server, as 'sy-prc-server'. */
const BOTH_ENDS_SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const { host } = JSON.parse(process.argv.at(-1));
process.title = 'sy-prc-server';
const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
udp.bind(${BOTH_UDP_PORT}, host, () => {
  net.createServer((s) => { s.on('error', () => {}); s.on('data', () => s.end('hi')); }).listen(${BOTH_TCP_PORT}, host, () => console.log('ready', process.pid));
});
`;

/** A TCP client that sends and reads, and a connected UDP client that sends and reads the echo. */
const BOTH_ENDS_CLIENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const { host, title } = JSON.parse(process.argv.at(-1));
process.title = title;
await new Promise((resolve, reject) => {
  const s = net.connect({ host, port: ${BOTH_TCP_PORT} }, () => s.write('x'));
  s.on('data', () => { s.destroy(); resolve(); });
  s.on('error', reject);
});
await new Promise((resolve) => {
  const u = dgram.createSocket('udp4');
  u.connect(${BOTH_UDP_PORT}, host, () => u.send('ping'));
  u.on('message', () => { u.close(); resolve(); });
});
console.log(JSON.stringify({ pid: process.pid }));
`;

interface ClientResult {
  pid: number;
  outcomes: Record<string, number>;
  localAddresses: string[];
}

type BpfKind = 'prog' | 'link' | 'map';

/** Open fds of this process that are BPF programs, links or maps: fd → kind and kernel id. */
function bpfFds(): Map<string, { kind: BpfKind; id: number }> {
  const out = new Map<string, { kind: BpfKind; id: number }>();
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    let info: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    if (!target.startsWith('anon_inode:bpf')) continue;
    const link = /^link_id:\s*(\d+)/m.exec(info);
    const prog = /^prog_id:\s*(\d+)/m.exec(info);
    const map = /^map_id:\s*(\d+)/m.exec(info);
    // A link's fdinfo names its program too: link_id first.
    if (link) out.set(fd, { kind: 'link', id: Number(link[1]) });
    else if (prog) out.set(fd, { kind: 'prog', id: Number(prog[1]) });
    else if (map) out.set(fd, { kind: 'map', id: Number(map[1]) });
  }
  return out;
}

/** Whether a program, link or map id still exists in the kernel. */
function alive(kind: BpfKind, id: number): boolean {
  try {
    if (kind === 'prog') Program.fromId(id).close();
    else if (kind === 'link') Link.fromId(id).close();
    else closeFd(getFdById(BpfCommand.MAP_GET_FD_BY_ID, id, `map id ${id}`));
    return true;
  } catch (err) {
    if (err instanceof BpfNotFoundError) return false;
    throw err;
  }
}

const sumConnections = (events: readonly ProcessEvent[]): number =>
  events.reduce((sum, e) => sum + (e.connections ?? 0), 0);

describeKernel('observe: process context for TCP connections, counted in the kernel', () => {
  let cgroupPath: string;
  let id: bigint;
  let allowedIds: bigint[] = [];
  let tracer: ProcessTracer | undefined;
  let server: NetnsProcess | undefined;
  const events: ProcessEvent[] = [];
  const lost: { count: number; where: string }[] = [];
  let objects: { kind: BpfKind; id: number }[] = [];

  beforeAll(async () => {
    if (existsSync(`/run/netns/${NETNS}`)) run('ip', ['netns', 'del', NETNS]);
    run('ip', ['netns', 'add', NETNS]);
    const ip = (...args: string[]) => run('ip', ['-n', NETNS, ...args]);
    ip('link', 'set', 'lo', 'up');
    ip('addr', 'add', `${SERVER_IP}/32`, 'dev', 'lo');
    // Both ends inside the namespace; nothing answers ARP for BLACK_HOLE, so its SYN never leaves.
    ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    ip('addr', 'add', `${LOCAL_IP}/24`, 'dev', 'v0');
    ip('link', 'set', 'v0', 'up');
    ip('link', 'set', 'v1', 'up');

    cgroupPath = join(cgroup2Mount(), CGROUP_DIR, `prc-${RUN_TAG}`);
    mkdirSync(cgroupPath, { recursive: true });
    id = cgroupId(cgroupPath);

    const [file, ...rest] = inNetnsArgv({
      netns: NETNS,
      argv: [
        process.execPath,
        '--input-type=module',
        '-e',
        SERVER,
        JSON.stringify({ host: SERVER_IP, port: OPEN_PORT }),
      ],
    });
    server = new NetnsProcess(spawn(file as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] }));
    await server.waitFor('ready');

    const before = bpfFds();
    allowedIds = [id];
    tracer = createProcessTracer({ cgroupIds: () => allowedIds, pollMs: POLL_MS });
    await tracer.start({
      event: (e: KernelEvent) => {
        if (e.kind === 'process') events.push(e);
      },
      lost: (count, where) => lost.push({ count, where }),
    });
    objects = [...bpfFds()].filter(([fd]) => !before.has(fd)).map(([, o]) => o);
  });

  afterAll(async () => {
    await tracer?.stop();
    server?.kill();
    await server?.exited;
    if (existsSync(`/run/netns/${NETNS}`)) run('ip', ['netns', 'del', NETNS]);
    if (cgroupPath) await removeCgroupTree(cgroupPath);
  });

  function client(args: Record<string, unknown>, inCgroup: boolean): Promise<ClientResult> {
    const [file, ...rest] = inNetnsArgv({
      netns: NETNS,
      cgroup: inCgroup ? cgroupPath : undefined,
      argv: [
        process.execPath,
        '--input-type=module',
        '-e',
        CLIENT,
        JSON.stringify({ title: COMM, count: 1, ...args }),
      ],
    });
    return new NetnsProcess(spawn(file as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] })).result();
  }

  /** The events of `pid`, once their connections add up to `connections` (or the timeout passes). */
  async function eventsOf(pid: number, connections = 1, timeoutMs = 5000): Promise<ProcessEvent[]> {
    const deadline = Date.now() + timeoutMs;
    const of = () => events.filter((e) => e.pid === pid && e.side !== 'socket');
    while (sumConnections(of()) < connections && Date.now() < deadline) await sleep(10);
    return of();
  }

  it('reads the tracepoint layout from tracefs and rejects a layout it cannot use', () => {
    const layout = setStateLayout(readTracepointFormat('sock', 'inet_sock_set_state'));
    expect(layout.newstate).toBeGreaterThanOrEqual(8);
    expect(new Set(Object.values(layout)).size).toBe(6);
    const format = '\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n';
    expect(() => setStateLayout(format)).toThrow(/no field 'dport'/);
  });

  it('attaches one program with an fd-based link, and its three maps', () => {
    // The connect program, and the two socket programs (tp_btf) sharing its maps plus their own.
    expect(objects.map((o) => o.kind).sort()).toEqual([
      'link',
      'link',
      'link',
      'map',
      'map',
      'map',
      'map',
      'prog',
      'prog',
      'prog',
    ]);
  });

  it('counts 200 connects of one process into one record per interval, without the source port', async () => {
    const n = 200;
    const started = Date.now();
    const result = await client({ host: SERVER_IP, port: OPEN_PORT, count: n }, true);
    expect(result.outcomes).toEqual({ ok: n });
    // Unbound sockets: the source address the kernel chose is the one the program saw at SYN_SENT.
    expect(result.localAddresses).toEqual([SERVER_IP]);
    const got = await eventsOf(result.pid, n);
    const drains = Math.ceil((Date.now() - started) / POLL_MS) + 1;
    expect(sumConnections(got)).toBe(n);
    for (const e of got)
      expect(e).toMatchObject({
        kind: 'process',
        protocol: 6,
        src: SERVER_IP,
        dst: SERVER_IP,
        sport: 0,
        dport: OPEN_PORT,
        pid: result.pid,
        comm: COMM,
        cgroupId: id.toString(),
      });
    // At most one record per drain, however many connects: not one per connection.
    expect(got.length).toBeLessThanOrEqual(drains);
    expect(got.length).toBeLessThan(n / 10);
    console.log(
      `process tracer: ${n} connects → ${got.length} events over ${drains} drains of ${POLL_MS} ms ` +
        `(${((got.length * 1000) / n).toFixed(0)} per 1000 connections)`,
    );
  });

  it('starts a tuple afresh after a drain: the next process gets its own record', async () => {
    const result = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    const got = await eventsOf(result.pid);
    expect(got).toEqual([expect.objectContaining({ pid: result.pid, dport: OPEN_PORT, connections: 1 })]);
  });

  it('attributes refused connects (SYN_SENT → CLOSE on RST)', async () => {
    const result = await client({ host: SERVER_IP, port: CLOSED_PORT, count: 20 }, true);
    expect(result.outcomes).toEqual({ ECONNREFUSED: 20 });
    const got = await eventsOf(result.pid, 20);
    expect(sumConnections(got)).toBe(20);
    for (const e of got)
      expect(e).toMatchObject({
        src: SERVER_IP,
        dst: SERVER_IP,
        sport: 0,
        dport: CLOSED_PORT,
        comm: COMM,
        cgroupId: id.toString(),
      });
  });

  it('attributes connects abandoned while the SYN goes unanswered, from the address the route chose', async () => {
    const result = await client({ host: BLACK_HOLE, port: 80, count: 3, giveUpMs: 100 }, true);
    expect(result.outcomes).toEqual({ 'gave up': 3 });
    const got = await eventsOf(result.pid, 3);
    expect(sumConnections(got)).toBe(3);
    for (const e of got)
      expect(e).toMatchObject({
        src: LOCAL_IP,
        dst: BLACK_HOLE,
        sport: 0,
        dport: 80,
        comm: COMM,
        cgroupId: id.toString(),
      });
  });

  it('ignores processes outside the allowed cgroups, and follows refreshCgroups()', async () => {
    const outside = await client({ host: SERVER_IP, port: OPEN_PORT }, false);
    expect(outside.outcomes).toEqual({ ok: 1 });

    allowedIds = [];
    tracer?.refreshCgroups();
    const dropped = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    expect(dropped.outcomes).toEqual({ ok: 1 });

    allowedIds = [id];
    tracer?.refreshCgroups();
    // Same tuple: had either earlier connect been counted, its process would own this entry.
    const readmitted = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    const got = await eventsOf(readmitted.pid);
    expect(got).toEqual([expect.objectContaining({ pid: readmitted.pid, connections: 1 })]);
    expect(events.filter((e) => e.pid === outside.pid || e.pid === dropped.pid)).toEqual([]);
  });

  it('reports the tuples an LRU too small for the interval evicted, and drains the rest', async () => {
    const tuples = 400;
    const seen: ProcessEvent[] = [];
    const smallLost = new Map<string, number>();
    // A second program on the same tracepoint, with a map a third the size of one interval's tuples.
    const small = createProcessTracer({ cgroupIds: () => [id], pollMs: 60_000, maxConnectors: 128 });
    await small.start({
      event: (e) => void (e.kind === 'process' && seen.push(e)),
      lost: (count, where) => smallLost.set(where, (smallLost.get(where) ?? 0) + count),
    });
    let result: ClientResult;
    try {
      result = await client({ host: SERVER_IP, port: 20000, count: tuples, spread: true }, true);
    } finally {
      await small.stop(); // the only drain: pollMs is longer than the test
    }
    expect(result.outcomes).toEqual({ ECONNREFUSED: tuples });
    const drained = seen.filter((e) => e.pid === result.pid);
    expect(sumConnections(drained)).toBe(drained.length); // one connect per tuple
    expect(drained.length).toBeLessThanOrEqual(128);
    // Every tuple is either drained with its process or reported evicted: none vanishes silently.
    expect(smallLost).toEqual(new Map([[LOST_EVICTED, tuples - drained.length]]));
    console.log(
      `process tracer, 128-entry map: ${tuples} tuples → ${drained.length} drained, ${tuples - drained.length} evicted`,
    );
  });

  it('a server-side accepted TCP flow and a UDP flow carry the process at both ends', async () => {
    const [file, ...rest] = inNetnsArgv({
      netns: NETNS,
      cgroup: cgroupPath,
      argv: [
        process.execPath,
        '--input-type=module',
        '-e',
        BOTH_ENDS_SERVER,
        JSON.stringify({ host: SERVER_IP }),
      ],
    });
    const both = new NetnsProcess(spawn(file as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] }));
    try {
      await both.waitFor('ready');
      const [cfile, ...crest] = inNetnsArgv({
        netns: NETNS,
        cgroup: cgroupPath,
        argv: [
          process.execPath,
          '--input-type=module',
          '-e',
          BOTH_ENDS_CLIENT,
          JSON.stringify({ host: SERVER_IP, title: COMM }),
        ],
      });
      const result = await new NetnsProcess(
        spawn(cfile as string, crest, { stdio: ['ignore', 'pipe', 'pipe'] }),
      ).result<{ pid: number }>();
      const socketEvents = async (pid: number, protocol: number): Promise<ProcessEvent[]> => {
        const deadline = Date.now() + 5000;
        const of = () =>
          events.filter((e) => e.side === 'socket' && e.pid === pid && e.protocol === protocol);
        while (of().length === 0 && Date.now() < deadline) await sleep(20);
        return of();
      };
      const serverPid = Number(/ready (\d+)/.exec(both.output().stdout)?.[1]);
      for (const protocol of [6, 17]) {
        expect(await socketEvents(result.pid, protocol)).not.toEqual([]);
        expect(await socketEvents(serverPid, protocol)).not.toEqual([]);
      }
      // Join the kernel's events to flow aggregates as an agent's flow table does.
      const table = new FlowTable({
        node: 'n1',
        podOfCgroup: (c) => (c === id.toString() ? 'default/both' : undefined),
      });
      for (const e of events) table.event(e);
      for (const [protocol, dport] of [
        [6, BOTH_TCP_PORT],
        [17, BOTH_UDP_PORT],
      ] as const) {
        table.event({
          kind: 'counts',
          verdict: 'allow',
          rule: 'r1',
          direction: 'egress',
          protocol,
          src: SERVER_IP,
          sport: 0,
          dst: SERVER_IP,
          dport,
          packets: 2,
          bytes: 100,
          connections: 1,
          firstSeen: Date.now(),
          lastSeen: Date.now(),
        });
        const flow = table.list().find((f) => f.dport === dport)!;
        expect(flow.sourceProcess).toMatchObject({ pid: result.pid, comm: COMM, pod: 'default/both' });
        expect(flow.process).toMatchObject({ pid: result.pid, comm: COMM });
        expect(flow.destinationProcess).toMatchObject({
          pid: serverPid,
          comm: 'sy-prc-server',
          pod: 'default/both',
        });
      }
    } finally {
      both.kill();
      await both.exited;
    }
  });

  it('stop() delivers the last partial interval, then frees program, link and maps', async () => {
    const last = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    await tracer?.stop();
    tracer = undefined;
    // Whether a drain took it before stop() or stop() did, it is here now.
    expect(sumConnections(events.filter((e) => e.pid === last.pid))).toBe(1);
    const deadline = Date.now() + 3000;
    while (objects.some((o) => alive(o.kind, o.id)) && Date.now() < deadline) await sleep(20);
    expect(objects.filter((o) => alive(o.kind, o.id))).toEqual([]);
    // No connect went unrecorded, and every one had its source address at SYN_SENT.
    expect(lost).toEqual([]);
  });
});
