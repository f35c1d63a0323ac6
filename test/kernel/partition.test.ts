/**
 * src/lab/partition.ts against the real kernel: an "agent" child process in its own cgroup talks
 * to an echo server ("etcd") on 127.0.0.1 in the root namespace; cutting the agent off must stall
 * it without touching the test process, and healing must let TCP recover on its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PIN_ROOT } from '../../src/lab/names.js';
import { cutOff, heal, isCutOff } from '../../src/lab/partition.js';
import { cgroup2Mount } from '../../src/netns/index.js';
import { describeKernel } from '../support/kernel.js';

/**
 * The agent: opens no socket until told to on stdin, so it can be moved into the cgroup first
 * (cgroup_skb programs follow the cgroup a socket was created in, not the process's current one).
 */
const AGENT = `
const net = require('node:net');
const port = Number(process.argv[1]);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const held = new Map();
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line);
  if (m.cmd === 'connect') {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buffer = '';
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (m.keep && result.ok) held.set(m.id, socket);
      else socket.destroy();
      say({ id: m.id, ...result });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), m.timeoutMs);
    socket.on('connect', () => socket.write(m.id + '\\n'));
    socket.on('data', (chunk) => {
      buffer += chunk;
      if (buffer.includes('\\n')) finish({ ok: true, echo: buffer.trim() });
    });
    socket.on('error', (err) => finish({ ok: false, error: err.code }));
  } else if (m.cmd === 'send') {
    const socket = held.get(m.conn);
    let buffer = '';
    const onData = (chunk) => {
      buffer += chunk;
      if (buffer.includes(m.text)) {
        socket.off('data', onData);
        say({ id: m.id, ok: true, echo: m.text });
      }
    };
    socket.on('data', onData);
    socket.write(m.text + '\\n');
    say({ id: m.id + ':written' });
  }
});
`;

interface Reply {
  id: string;
  ok?: boolean;
  echo?: string;
  error?: string;
}

class Agent {
  private readonly waiting = new Map<string, (reply: Reply) => void>();
  private readonly replies = new Map<string, Reply>();
  readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const reply = JSON.parse(line) as Reply;
      this.replies.set(reply.id, reply);
      this.waiting.get(reply.id)?.(reply);
    });
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
  }

  /** Sends a command; `reply(id)` waits for its answer. */
  tell(command: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  reply(id: string, timeoutMs: number): Promise<Reply | undefined> {
    const ready = this.replies.get(id);
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      this.waiting.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  }

  async ask(
    command: Record<string, unknown> & { id: string },
    timeoutMs = 5_000,
  ): Promise<Reply | undefined> {
    this.tell(command);
    return this.reply(command.id, timeoutMs);
  }
}

/** A connect + echo round trip from the test process itself (outside the agent's cgroup). */
function connectFromHere(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('outside\n'));
    socket.on('data', () => done(true));
    socket.on('error', () => done(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeKernel('lab: partition one agent from etcd with cgroup_skb programs', () => {
  const lab = `sy-ptest-${randomBytes(4).toString('hex')}`;
  const node = 'n1';
  const labCgroup = join(cgroup2Mount(), 'switchyard', lab);
  const cgroup = join(labCgroup, 'agents', node);
  let server: net.Server;
  let port = 0;
  let received = '';
  let agent: Agent | undefined;

  beforeAll(async () => {
    mkdirSync(cgroup, { recursive: true });
    server = net.createServer((socket) => {
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        received += chunk;
        socket.write(chunk);
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    const child = spawn(process.execPath, ['-e', AGENT, String(port)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    writeFileSync(join(cgroup, 'cgroup.procs'), String(child.pid));
    agent = new Agent(child);
  });

  afterAll(async () => {
    if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
      agent.child.kill('SIGKILL');
      await agent.exited;
    }
    await heal({ lab, node });
    server?.close();
    for (const dir of [cgroup, join(labCgroup, 'agents'), labCgroup]) if (existsSync(dir)) rmdirSync(dir);
    rmSync(join(PIN_ROOT, lab), { recursive: true, force: true });
  });

  it('runs the agent inside the cgroup', () => {
    const membership = readFileSync(`/proc/${agent!.child.pid}/cgroup`, 'utf8');
    expect(membership).toContain(`0::/switchyard/${lab}/agents/${node}\n`);
  });

  it('lets the agent reach etcd before the cut', async () => {
    expect(isCutOff(lab, node)).toBe(false);
    expect(await agent!.ask({ cmd: 'connect', id: 'before', timeoutMs: 1_500 })).toEqual({
      id: 'before',
      ok: true,
      echo: 'before',
    });
    expect(await agent!.ask({ cmd: 'connect', id: 'held', keep: true, timeoutMs: 1_500 })).toMatchObject({
      ok: true,
    });
  });

  it('drops the agent’s traffic after cutOff, and only the agent’s', async () => {
    await cutOff({ lab, node, cgroup, port });
    await cutOff({ lab, node, cgroup, port }); // idempotent: replaces the first
    expect(isCutOff(lab, node)).toBe(true);
    expect(existsSync(join(PIN_ROOT, lab, 'partition', node, 'egress'))).toBe(true);
    expect(existsSync(join(PIN_ROOT, lab, 'partition', node, 'ingress'))).toBe(true);

    const start = Date.now();
    agent!.tell({ cmd: 'send', conn: 'held', id: 'stalled', text: 'after-cut' });
    expect(await agent!.reply('stalled:written', 2_000)).toBeDefined();
    const [fresh, outside] = await Promise.all([
      agent!.ask({ cmd: 'connect', id: 'during', timeoutMs: 1_500 }),
      connectFromHere(port, 1_500),
    ]);
    expect(fresh).toEqual({ id: 'during', ok: false, error: 'timeout' });
    expect(outside).toBe(true);

    await sleep(Math.max(0, 1_000 - (Date.now() - start)));
    expect(received).not.toContain('after-cut');
    expect(await agent!.reply('stalled', 0)).toBeUndefined();
  }, 10_000);

  it('restores the agent after heal, stalled data included', async () => {
    expect(await heal({ lab, node })).toBe(true);
    expect(isCutOff(lab, node)).toBe(false);
    expect(existsSync(join(PIN_ROOT, lab, 'partition'))).toBe(false);
    expect(await heal({ lab, node })).toBe(false);

    expect(await agent!.ask({ cmd: 'connect', id: 'after', timeoutMs: 1_500 })).toEqual({
      id: 'after',
      ok: true,
      echo: 'after',
    });
    const start = Date.now();
    // Retransmission backs off while cut (0.2 s, 0.4 s, 0.8 s, ...): the next try is at most a few seconds away.
    expect(await agent!.reply('stalled', 8_000)).toEqual({ id: 'stalled', ok: true, echo: 'after-cut' });
    expect(received).toContain('after-cut');
    console.log(`stalled data delivered ${Date.now() - start} ms after heal`);
  }, 12_000);
});
