/**
 * Runs one chaos prober (chaos-prober.ts) inside each client pod's network namespace, keeps their
 * targets equal to the lab's servers, and collects every attempt. A client namespace recreated
 * under the prober (a lab rebuild) gets a fresh prober, and that is counted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { netnsInode, REPO } from './lab-harness.js';
import type { ProbeRecord } from '../support/chaos-model.js';
import { pairKey } from './chaos-world.js';

export interface ProberStats {
  launched: number;
  slots: number;
  maxInFlight: number;
  lateMs: { p50: number; p99: number; max: number };
  cpuMs: number;
  wallMs: number;
}

export interface ProbeTarget {
  id: string;
  address: string;
}

interface Running {
  child: ChildProcess;
  inode: number;
  stats?: ProberStats;
  closed: Promise<void>;
}

const PROBER = join(REPO, 'test', 'kernel', 'chaos-prober.ts');

export class Probers {
  readonly records: ProbeRecord[] = [];
  readonly stats: ProberStats[] = [];
  /** Probers started again because their client's namespace was recreated. */
  restarts = 0;
  private readonly running = new Map<string, Running>();
  private targets: ProbeTarget[] = [];
  private checking = false;

  /** `clients`: client pod name → its network namespace. */
  constructor(private readonly clients: ReadonlyMap<string, string>) {}

  start(): void {
    for (const client of this.clients.keys()) this.startOne(client);
  }

  private startOne(client: string): void {
    const netns = this.clients.get(client) as string;
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '--import', 'tsx', PROBER], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const run: Running = {
      child,
      inode: netnsInode(netns),
      closed: new Promise((resolve) => child.on('close', () => resolve())),
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const m = JSON.parse(line) as {
        id?: string;
        t?: number;
        ms?: number;
        ok?: boolean;
        e?: string;
        lp?: number;
        stats?: ProberStats;
      };
      if (m.stats) run.stats = m.stats;
      else if (m.id !== undefined && m.t !== undefined && m.ms !== undefined && m.ok !== undefined)
        this.records.push({
          pair: pairKey(client, m.id.split('/')[1] as string),
          server: m.id,
          t: m.t,
          ms: m.ms,
          ok: m.ok,
          ...(m.lp ? { localPort: m.lp } : {}),
          ...(m.e ? { error: m.e } : {}),
        });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.write(JSON.stringify({ targets: this.targets }) + '\n');
    this.running.set(client, run);
  }

  setTargets(targets: readonly ProbeTarget[]): void {
    this.targets = [...targets];
    for (const r of this.running.values())
      r.child.stdin?.write(JSON.stringify({ targets: this.targets }) + '\n');
  }

  /** Restarts probers whose client namespace is not the one they started in. */
  async checkNamespaces(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      await this.restartMoved();
    } finally {
      this.checking = false;
    }
  }

  private async restartMoved(): Promise<void> {
    for (const [client, run] of this.running) {
      let inode: number;
      try {
        inode = netnsInode(this.clients.get(client) as string);
      } catch {
        continue; // being recreated right now: next check
      }
      if (inode === run.inode) continue;
      this.restarts += 1;
      await this.stopOne(run);
      this.startOne(client);
    }
  }

  private async stopOne(run: Running): Promise<void> {
    run.child.kill('SIGTERM');
    const killer = setTimeout(() => run.child.kill('SIGKILL'), 3000);
    await run.closed;
    clearTimeout(killer);
    if (run.stats) this.stats.push(run.stats);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.running.values()].map((r) => this.stopOne(r)));
    this.running.clear();
  }
}
