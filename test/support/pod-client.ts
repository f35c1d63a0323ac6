/**
 * A Node.js client script run inside a lab pod (its network namespace and its cgroup, so the
 * cgroup socket programs see its sockets), driven by JSON commands on stdin and answering one JSON
 * line per command on stdout. Each test writes its own script (whether a connection stays open is
 * the test's choice); the protocol, the UDP probe and the spawning are shared here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export interface ClientAnswer {
  seq: number;
  ok: boolean;
  answer?: string;
  peer?: string;
  from?: string;
  error?: string;
}

/**
 * The script's handler for `{ op: 'udp', host, port, seq }`: one datagram, the first word of the
 * answer and the address it came from (for either family), or the error / a 2 s timeout.
 */
export const UDP_PROBE_HANDLER = `
const udpProbe = (cmd) => {
  const s = dgram.createSocket(cmd.host.includes(':') ? 'udp6' : 'udp4');
  const timer = setTimeout(() => { say({ seq: cmd.seq, ok: false, error: 'timeout' }); s.close(); }, 2000);
  s.on('error', (e) => { clearTimeout(timer); say({ seq: cmd.seq, ok: false, error: e.code }); s.close(); });
  s.on('message', (m, from) => {
    clearTimeout(timer);
    say({ seq: cmd.seq, ok: true, answer: m.toString().trim().split(' ')[0], from: from.address + ':' + from.port });
    s.close();
  });
  s.send('probe\\n', cmd.port, cmd.host, (err) => {
    if (!err) return;
    clearTimeout(timer);
    say({ seq: cmd.seq, ok: false, error: err.code });
    s.close();
  });
};
`;

export interface LabPodPlace {
  netns: string;
  slug: string;
}

export class PodClient {
  private seq = 0;
  private buf = '';
  private readonly waiting = new Map<number, (a: ClientAnswer) => void>();
  private readonly ready: Promise<void>;

  /** Starts `script` (an ES module that prints `{"ready":true}` once it reads commands) in `pod`. */
  static start(pod: LabPodPlace, cgroupRoot: string, script: string): PodClient {
    const cgroup = join(cgroupRoot, pod.slug);
    const command = `echo $$ > '${cgroup}/cgroup.procs' && exec ip netns exec '${pod.netns}' '${process.execPath}' --input-type=module -e "$0"`;
    return new PodClient(spawn('sh', ['-c', command, script], { stdio: ['pipe', 'pipe', 'inherit'] }));
  }

  private constructor(readonly child: ChildProcess) {
    let markReady: () => void = () => undefined;
    this.ready = new Promise((resolve) => (markReady = resolve));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.buf += chunk;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buf.slice(0, i)) as ClientAnswer & { ready?: boolean };
        this.buf = this.buf.slice(i + 1);
        if (msg.ready) markReady();
        else this.waiting.get(msg.seq)?.(msg);
      }
    });
  }

  async ask(cmd: Record<string, unknown>): Promise<ClientAnswer> {
    await this.ready;
    const seq = ++this.seq;
    const answer = new Promise<ClientAnswer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(cmd)}`)), 5000);
      this.waiting.set(seq, (a) => {
        clearTimeout(timer);
        resolve(a);
      });
    });
    this.child.stdin?.write(`${JSON.stringify({ ...cmd, seq })}\n`);
    return answer;
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
