import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfNotFoundError, Link, Program } from '../../src/bpf/index.js';
import { CGROUP_DIR } from '../../src/lab/names.js';
import { cgroup2Mount, inNetnsArgv, removeCgroupTree } from '../../src/netns/index.js';
import type { KernelEvent, ProcessEvent } from '../../src/dataplane/events.js';
import { readTracepointFormat, setStateLayout } from '../../src/observe/process-program.js';
import { cgroupId, createProcessTracer, type ProcessTracer } from '../../src/observe/process-tracer.js';
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

const SERVER = `
import net from 'node:net';
const { host, port } = JSON.parse(process.argv.at(-1));
net.createServer((socket) => { socket.on('error', () => {}); socket.end('hi\\n'); }).listen(port, host, () => console.log('ready'));
`;

/** Connects once; prints its pid, the outcome and the local end (ephemeral port unless given). */
const CLIENT = `
import net from 'node:net';
const { host, port, localAddress, localPort, giveUpMs, title } = JSON.parse(process.argv.at(-1));
process.title = title;
const socket = net.connect({ host, port, localAddress, localPort });
const done = (result) => { console.log(JSON.stringify({ pid: process.pid, ...result })); socket.destroy(); };
if (giveUpMs) setTimeout(() => done({ ok: false, error: 'gave up' }), giveUpMs);
socket.on('connect', () => done({ ok: true, local: socket.localAddress + ':' + socket.localPort }));
socket.on('error', (err) => done({ ok: false, error: err.code }));
`;

interface ClientResult {
  pid: number;
  ok: boolean;
  local?: string;
  error?: string;
}

/** Open fds of this process that are BPF programs or links: fd → kind and kernel id. */
function bpfFds(): Map<string, { kind: 'prog' | 'link'; id: number }> {
  const out = new Map<string, { kind: 'prog' | 'link'; id: number }>();
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    let info: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue;
    }
    const prog = /^prog_id:\s*(\d+)/m.exec(info);
    const link = /^link_id:\s*(\d+)/m.exec(info);
    if (!target.startsWith('anon_inode:bpf')) continue;
    // A link's fdinfo names its program too: link_id first.
    if (link) out.set(fd, { kind: 'link', id: Number(link[1]) });
    else if (prog) out.set(fd, { kind: 'prog', id: Number(prog[1]) });
  }
  return out;
}

/** Whether a program or link id still exists in the kernel. */
function alive(kind: 'prog' | 'link', id: number): boolean {
  try {
    (kind === 'prog' ? Program.fromId(id) : Link.fromId(id)).close();
    return true;
  } catch (err) {
    if (err instanceof BpfNotFoundError) return false;
    throw err;
  }
}

describeKernel('observe: process context for TCP connections', () => {
  let cgroupPath: string;
  let id: bigint;
  let allowedIds: bigint[] = [];
  let tracer: ProcessTracer | undefined;
  let server: NetnsProcess | undefined;
  const events: ProcessEvent[] = [];
  const lost: number[] = [];
  let objects: { kind: 'prog' | 'link'; id: number }[] = [];

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
    tracer = createProcessTracer({ cgroupIds: () => allowedIds });
    await tracer.start({
      event: (e: KernelEvent) => {
        if (e.kind === 'process') events.push(e);
      },
      lost: (n) => lost.push(n),
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
      argv: [process.execPath, '--input-type=module', '-e', CLIENT, JSON.stringify({ title: COMM, ...args })],
    });
    return new NetnsProcess(spawn(file as string, rest, { stdio: ['ignore', 'pipe', 'pipe'] })).result();
  }

  async function eventsOf(pid: number, count = 1, timeoutMs = 5000): Promise<ProcessEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (events.filter((e) => e.pid === pid).length < count && Date.now() < deadline) await sleep(10);
    return events.filter((e) => e.pid === pid);
  }

  it('reads the tracepoint layout from tracefs and rejects a layout it cannot use', () => {
    const layout = setStateLayout(readTracepointFormat('sock', 'inet_sock_set_state'));
    expect(layout.skaddr).toBeGreaterThanOrEqual(8);
    expect(new Set(Object.values(layout)).size).toBe(9);
    const format = '\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n';
    expect(() => setStateLayout(format)).toThrow(/no field 'oldstate'/);
  });

  it('attaches one program with an fd-based link', () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(['link', 'prog']);
  });

  it('reports pid, comm, cgroup and the 4-tuple of a successful connect from the cgroup', async () => {
    const result = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    expect(result.ok).toBe(true);
    const [, localPort] = (result.local ?? '').split(':');
    const got = await eventsOf(result.pid);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({
      kind: 'process',
      protocol: 6,
      src: SERVER_IP,
      dst: SERVER_IP,
      sport: Number(localPort),
      dport: OPEN_PORT,
      pid: result.pid,
      comm: COMM,
      cgroupId: id.toString(),
    });
    expect(Number(localPort)).toBeGreaterThan(0);
  });

  it('reports a refused connect (SYN_SENT → CLOSE on RST)', async () => {
    const localPort = 40000 + (process.pid % 1000);
    const result = await client(
      { host: SERVER_IP, port: CLOSED_PORT, localAddress: SERVER_IP, localPort },
      true,
    );
    expect(result).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
    const got = await eventsOf(result.pid);
    expect(got).toEqual([
      expect.objectContaining({
        src: SERVER_IP,
        dst: SERVER_IP,
        sport: localPort,
        dport: CLOSED_PORT,
        pid: result.pid,
        comm: COMM,
        cgroupId: id.toString(),
      }),
    ]);
  });

  it('reports a connect abandoned while the SYN goes unanswered', async () => {
    const result = await client({ host: BLACK_HOLE, port: 80, giveUpMs: 300 }, true);
    expect(result).toMatchObject({ ok: false, error: 'gave up' });
    const got = await eventsOf(result.pid);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({
      src: LOCAL_IP,
      dst: BLACK_HOLE,
      dport: 80,
      pid: result.pid,
      comm: COMM,
      cgroupId: id.toString(),
    });
    expect(got[0]?.sport).toBeGreaterThan(0);
  });

  it('ignores processes outside the allowed cgroups, and follows refreshCgroups()', async () => {
    const outside = await client({ host: SERVER_IP, port: OPEN_PORT }, false);
    expect(outside).toMatchObject({ ok: true });

    allowedIds = [];
    tracer?.refreshCgroups();
    const dropped = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    expect(dropped).toMatchObject({ ok: true });

    allowedIds = [id];
    tracer?.refreshCgroups();
    const readmitted = await client({ host: SERVER_IP, port: OPEN_PORT }, true);
    expect(await eventsOf(readmitted.pid)).toHaveLength(1);
    // Events arrive in order: by the time the last one is here, earlier ones would have been too.
    expect(events.filter((e) => e.pid === outside.pid || e.pid === dropped.pid)).toEqual([]);
  });

  it('stop() detaches and frees the program and link', async () => {
    await tracer?.stop();
    tracer = undefined;
    const deadline = Date.now() + 3000;
    while (objects.some((o) => alive(o.kind, o.id)) && Date.now() < deadline) await sleep(20);
    expect(objects.filter((o) => alive(o.kind, o.id))).toEqual([]);
    expect(lost).toEqual([]);
  });
});
