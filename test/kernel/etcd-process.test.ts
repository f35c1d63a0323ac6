/**
 * A lab's etcd as a real process: it starts healthy on loopback only, a second start returns the
 * running one, a write acknowledged before kill -9 is there after the restart, and lab cleanup
 * (destroyLab, and the orphan sweep of `lab down --all`) leaves no etcd behind. Only root, with
 * the lab's client certificate, can read or write it: user nobody cannot, however it asks.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
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
  type EtcdInfo,
} from '../../src/lab/etcd.js';
import { STATE_ROOT } from '../../src/lab/names.js';
import { isAlive, labDir } from '../../src/lab/state.js';
import { describeKernel } from '../support/kernel.js';

const suffix = () => randomBytes(2).toString('hex');
const LAB = `ety${suffix()}`;
const ORPHAN = `ety${suffix()}`;
const AUTH = `ety${suffix()}`;

/** etcdctl as root with the lab's client certificate. */
function etcdctl(info: EtcdInfo, ...args: string[]): string {
  const tls = ['--cacert', info.tls.ca, '--cert', info.tls.cert, '--key', info.tls.key];
  return execFileSync('etcdctl', ['--endpoints', info.clientUrl, ...tls, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    encoding: 'utf8',
    timeout: 10_000,
  }).trim();
}

const NOBODY = 65534;

/** etcdctl as user nobody: what it prints, and whether it succeeded. */
function etcdctlAsNobody(args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('etcdctl', ['--dial-timeout', '1s', '--command-timeout', '2s', ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ETCDCTL_API: '3' },
    uid: NOBODY,
    gid: NOBODY,
    encoding: 'utf8',
    timeout: 15_000,
  });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Every directory under `root` and its mode, every regular file and its mode. */
function modes(root: string): { dirs: Map<string, number>; files: Map<string, number> } {
  const dirs = new Map<string, number>([[root, statSync(root).mode & 0o777]]);
  const files = new Map<string, number>();
  for (const entry of readdirSync(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isDirectory()) dirs.set(path, statSync(path).mode & 0o777);
    else if (entry.isFile()) files.set(path, statSync(path).mode & 0o777);
  }
  return { dirs, files };
}

/** Local addresses of every TCP/UDP socket `pid` listens on. */
function listeningAddresses(pid: number): string[] {
  return execFileSync('ss', ['-ltunpH'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.trim().split(/\s+/)[4] ?? '');
}

describeKernel('lab etcd: a real process per lab', () => {
  afterAll(async () => {
    for (const lab of [LAB, ORPHAN, AUTH]) {
      await killEtcd(lab, 'SIGKILL').catch(() => undefined);
      rmSync(labDir(lab), { recursive: true, force: true });
    }
    for (const p of findEtcdProcesses().filter((e) => [LAB, ORPHAN, AUTH].includes(e.lab)))
      process.kill(p.pid, 'SIGKILL');
  });

  it('starts, survives kill -9 with its data, listens on loopback only, and cleanup removes it', async () => {
    mkdirSync(labDir(LAB), { recursive: true });
    const info = await startEtcd(LAB);
    const [member] = info.members;
    if (!member) throw new Error('no member');
    expect(info.members).toHaveLength(1);
    expect(info.clientUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(member.peerUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(info.clientUrl).not.toBe(member.peerUrl);
    expect(etcdRunning(LAB)).toBe(true);
    expect(readEtcdInfo(LAB)).toEqual(info);
    expect(etcdctl(info, 'member', 'list')).toContain(member.name);
    expect(findEtcdProcesses()).toContainEqual({ pid: member.pid, lab: LAB });

    expect(etcdctl(info, 'put', '/switchyard/test', 'before-kill')).toBe('OK');
    expect(etcdctl(info, 'get', '--print-value-only', '/switchyard/test')).toBe('before-kill');

    // Idempotent: the running one comes back.
    expect((await startEtcd(LAB)).members[0]?.pid).toBe(member.pid);

    const addresses = listeningAddresses(member.pid);
    expect(addresses.length).toBeGreaterThanOrEqual(2);
    for (const a of addresses) expect(a).toMatch(/^127\.0\.0\.1:\d+$/);

    await killEtcd(LAB, 'SIGKILL');
    expect(isAlive(member.pid)).toBe(false);
    expect(etcdRunning(LAB)).toBe(false);

    const again = await restartEtcd(LAB);
    const restarted = again.members[0];
    expect(restarted?.pid).not.toBe(member.pid);
    expect(again.clientUrl).toBe(info.clientUrl);
    expect(restarted?.peerUrl).toBe(member.peerUrl);
    expect(etcdctl(again, 'get', '--print-value-only', '/switchyard/test')).toBe('before-kill');

    const report = await destroyLab(LAB);
    expect(report.processes).toContain(restarted?.pid);
    expect(report.problems).toEqual([]);
    expect(isAlive(restarted?.pid ?? 0)).toBe(false);
    expect(existsSync(labDir(LAB))).toBe(false);
    expect(findEtcdProcesses().filter((p) => p.lab === LAB)).toEqual([]);
  });

  it('the orphan sweep of `lab down --all` kills an etcd whose lab directory is gone', async () => {
    mkdirSync(labDir(ORPHAN), { recursive: true });
    const info = await startEtcd(ORPHAN);
    const pid = info.members[0]?.pid ?? 0;
    // What a crash can leave: the process outlives its lab's state directory.
    rmSync(labDir(ORPHAN), { recursive: true, force: true });
    expect(findEtcdProcesses()).toContainEqual({ pid, lab: ORPHAN });
    expect(await stopOrphanEtcd()).toContain(pid);
    expect(isAlive(pid)).toBe(false);
    expect(findEtcdProcesses().filter((p) => p.lab === ORPHAN)).toEqual([]);
  });

  it("only root, with the lab's client certificate, reads or writes: user nobody cannot, however it asks", async () => {
    mkdirSync(labDir(AUTH), { recursive: true });
    const info = await startEtcd(AUTH);
    const member = info.members[0];
    if (!member) throw new Error('no member');
    expect(etcdctl(info, 'put', '/switchyard/objects/NetworkPolicy/app/deny', 'root-wrote')).toBe('OK');

    const url = info.clientUrl;
    const get = ['get', '--prefix', '/switchyard'];
    const put = ['put', '/switchyard/objects/NetworkPolicy/app/allow-all', '{"spec":{}}'];
    const skipVerify = ['--insecure-skip-tls-verify', '--insecure-transport=false'];
    const attempts: string[][] = [
      ['--endpoints', url, ...get], // TLS against the system's CAs
      ['--endpoints', url.replace('https:', 'http:'), ...get], // plain gRPC to the TLS port
      ['--endpoints', url, ...skipVerify, ...get], // TLS without a client certificate
      ['--endpoints', url, ...skipVerify, ...put],
      ['--endpoints', url, ...skipVerify, '--user', 'root:root', ...put], // etcd's password auth
      ['--endpoints', member.peerUrl, ...skipVerify, ...get], // the peer port
      // The lab's own certificate: nobody cannot read it.
      ['--endpoints', url, '--cacert', info.tls.ca, '--cert', info.tls.cert, '--key', info.tls.key, ...put],
    ];
    for (const args of attempts) {
      const r = etcdctlAsNobody(args);
      expect(r.ok, `nobody: etcdctl ${args.join(' ')}\n${r.out}`).toBe(false);
      expect(r.out).not.toContain('root-wrote');
    }
    // The HTTP gateway (curl's way in) wants the certificate too.
    const curl = spawnSync(
      'curl',
      ['-sk', '--max-time', '3', '-X', 'POST', `${url}/v3/kv/range`, '-d', '{"key":"Lw=="}'],
      {
        uid: NOBODY,
        gid: NOBODY,
        encoding: 'utf8',
      },
    );
    expect(curl.status).not.toBe(0);
    expect(curl.stdout).not.toContain('kvs');

    // Root with the certificate still reads and writes; nobody's writes left nothing.
    expect(
      etcdctl(info, 'get', '--prefix', '--keys-only', '/switchyard').split('\n').filter(Boolean),
    ).toEqual(['/switchyard/objects/NetworkPolicy/app/deny']);

    // Keys and data: directories 0700, files 0600, root's.
    const tree = modes(labDir(AUTH));
    expect(tree.files.size).toBeGreaterThan(5);
    for (const [path, mode] of tree.dirs) expect(mode.toString(8), path).toBe('700');
    for (const [path, mode] of tree.files) expect(mode.toString(8), path).toBe('600');
    expect(statSync(STATE_ROOT).mode & 0o777).toBe(0o700);

    // Modes an older version left wider are narrowed on the next start.
    chmodSync(info.tls.cert, 0o644);
    chmodSync(join(labDir(AUTH), 'etcd'), 0o755);
    chmodSync(labDir(AUTH), 0o755);
    await startEtcd(AUTH);
    expect(statSync(info.tls.cert).mode & 0o777).toBe(0o600);
    expect(statSync(join(labDir(AUTH), 'etcd')).mode & 0o777).toBe(0o700);
    expect(statSync(labDir(AUTH)).mode & 0o777).toBe(0o700);
  }, 60_000);
});
