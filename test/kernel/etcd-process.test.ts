/**
 * A lab's etcd as a real process: it starts healthy on loopback only, a second start returns the
 * running one, a write acknowledged before kill -9 is there after the restart, and lab cleanup
 * (destroyLab, and the orphan sweep of `lab down --all`) leaves no etcd behind.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { destroyLab } from '../../src/lab/down.js';
import {
  etcdRunning,
  findEtcdProcesses,
  killEtcd,
  readEtcdInfo,
  restartEtcd,
  startEtcd,
  stopOrphanEtcd,
} from '../../src/lab/etcd.js';
import { isAlive, labDir } from '../../src/lab/state.js';
import { describeKernel } from '../support/kernel.js';

const suffix = () => randomBytes(2).toString('hex');
const LAB = `ety${suffix()}`;
const ORPHAN = `ety${suffix()}`;

function etcdctl(endpoint: string, ...args: string[]): string {
  return execFileSync('etcdctl', ['--endpoints', endpoint, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    encoding: 'utf8',
    timeout: 10_000,
  }).trim();
}

/** Local addresses of every TCP/UDP socket `pid` listens on. */
function listeningAddresses(pid: number): string[] {
  return execFileSync('ss', ['-ltunpH'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.trim().split(/\s+/)[4] ?? '');
}

async function health(url: string): Promise<unknown> {
  return (await fetch(`${url}/health`)).json();
}

describeKernel('lab etcd: a real process per lab', () => {
  afterAll(async () => {
    for (const lab of [LAB, ORPHAN]) {
      await killEtcd(lab, 'SIGKILL').catch(() => undefined);
      rmSync(labDir(lab), { recursive: true, force: true });
    }
    for (const p of findEtcdProcesses().filter((e) => e.lab === LAB || e.lab === ORPHAN))
      process.kill(p.pid, 'SIGKILL');
  });

  it('starts, survives kill -9 with its data, listens on loopback only, and cleanup removes it', async () => {
    mkdirSync(labDir(LAB), { recursive: true });
    const info = await startEtcd(LAB);
    expect(info.clientUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(info.peerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(info.clientUrl).not.toBe(info.peerUrl);
    expect(etcdRunning(LAB)).toBe(true);
    expect(readEtcdInfo(LAB)).toEqual(info);
    expect(await health(info.clientUrl)).toMatchObject({ health: 'true' });
    expect(findEtcdProcesses()).toContainEqual({ pid: info.pid, lab: LAB });

    expect(etcdctl(info.clientUrl, 'put', '/switchyard/test', 'before-kill')).toBe('OK');
    expect(etcdctl(info.clientUrl, 'get', '--print-value-only', '/switchyard/test')).toBe('before-kill');

    // Idempotent: the running one comes back.
    expect((await startEtcd(LAB)).pid).toBe(info.pid);

    const addresses = listeningAddresses(info.pid);
    expect(addresses.length).toBeGreaterThanOrEqual(2);
    for (const a of addresses) expect(a).toMatch(/^127\.0\.0\.1:\d+$/);

    await killEtcd(LAB, 'SIGKILL');
    expect(isAlive(info.pid)).toBe(false);
    expect(etcdRunning(LAB)).toBe(false);

    const again = await restartEtcd(LAB);
    expect(again.pid).not.toBe(info.pid);
    expect(again.clientUrl).toBe(info.clientUrl);
    expect(again.peerUrl).toBe(info.peerUrl);
    expect(etcdctl(again.clientUrl, 'get', '--print-value-only', '/switchyard/test')).toBe('before-kill');

    const report = await destroyLab(LAB);
    expect(report.processes).toContain(again.pid);
    expect(report.problems).toEqual([]);
    expect(isAlive(again.pid)).toBe(false);
    expect(existsSync(labDir(LAB))).toBe(false);
    expect(findEtcdProcesses().filter((p) => p.lab === LAB)).toEqual([]);
  });

  it('the orphan sweep of `lab down --all` kills an etcd whose lab directory is gone', async () => {
    mkdirSync(labDir(ORPHAN), { recursive: true });
    const info = await startEtcd(ORPHAN);
    // What a crash can leave: the process outlives its lab's state directory.
    rmSync(labDir(ORPHAN), { recursive: true, force: true });
    expect(findEtcdProcesses()).toContainEqual({ pid: info.pid, lab: ORPHAN });
    expect(await stopOrphanEtcd()).toContain(info.pid);
    expect(isAlive(info.pid)).toBe(false);
    expect(findEtcdProcesses().filter((p) => p.lab === ORPHAN)).toEqual([]);
  });
});
