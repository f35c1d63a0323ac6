/**
 * The keys of a lab's etcd: a CA made at `cluster up`, one certificate for the members (server
 * and peer, for 127.0.0.1 and localhost) and one client certificate for root's CLI and the agents. etcd runs
 * with `--client-cert-auth`, so only a holder of a certificate signed by this CA can read or
 * write: loopback is not access control on a shared host, file modes are. Everything lives in a
 * 0700 directory owned by root, every file 0600; the CA's key is deleted once the certificates
 * are signed, so nobody (root included) can mint another one for this lab.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EtcdTlsFiles } from '../datastore/etcd.js';
import { LabError } from './errors.js';

export interface EtcdPki {
  /** What clients present (and trust): root's CLI and the agents. */
  client: EtcdTlsFiles;
  /** What members present to clients and to each other. */
  member: EtcdTlsFiles;
}

const OPENSSL = 'openssl';
/** Ten years: a lab's keys die with the lab; an expiry mid-run would only be a surprise. */
const DAYS = '3650';
/** Only what `req` needs: Debian's openssl.cnf would add its own v3_ca extensions. */
const CONFIG = '[req]\ndistinguished_name = dn\n[dn]\n';

export function pkiFiles(dir: string): EtcdPki {
  const files = (name: string): EtcdTlsFiles => ({
    ca: join(dir, 'ca.crt'),
    cert: join(dir, `${name}.crt`),
    key: join(dir, `${name}.key`),
  });
  return { client: files('client'), member: files('member') };
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync(OPENSSL, args, { cwd: dir, encoding: 'utf8', timeout: 30_000 });
  if (r.error)
    throw new LabError(`cannot run ${OPENSSL} (${r.error.message}): see scripts/setup.sh`, {
      cause: r.error,
    });
  if (r.status !== 0) throw new LabError(`${OPENSSL} ${args[0]} failed in ${dir}: ${r.stderr.trim()}`);
}

/** One EC P-256 key and a certificate for it: self-signed (the CA) or signed by the CA. */
function certificate(
  dir: string,
  name: string,
  subject: string,
  extensions: string[],
  signed: boolean,
): void {
  openssl(dir, [
    'req',
    '-config',
    'openssl.cnf',
    '-x509',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    DAYS,
    '-subj',
    subject,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    ...(signed ? ['-CA', 'ca.crt', '-CAkey', 'ca.key'] : []),
    ...extensions.flatMap((e) => ['-addext', e]),
  ]);
}

/** Makes the directory 0700 and every file in it 0600 (also ones an older run left wider). */
function tighten(dir: string): void {
  chmodSync(dir, 0o700);
  for (const f of readdirSync(dir)) chmodSync(join(dir, f), 0o600);
}

/**
 * The lab's keys in `dir`, generated when any is missing (a new CA and all certificates: a
 * half-made set is never reused). Needs `openssl` (Debian's, see scripts/setup.sh).
 */
export function ensureEtcdPki(dir: string, lab: string): EtcdPki {
  const pki = pkiFiles(dir);
  const all = [pki.client.ca, pki.client.cert, pki.client.key, pki.member.cert, pki.member.key];
  if (all.every((f) => existsSync(f))) {
    tighten(dir);
    return pki;
  }
  rmSync(dir, { recursive: true, force: true });
  // 0700 before any key exists: there is no moment a key sits in a readable directory.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  writeFileSync(join(dir, 'openssl.cnf'), CONFIG, { mode: 0o600 });
  certificate(
    dir,
    'ca',
    `/CN=switchyard lab ${lab} etcd CA`,
    ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'],
    false,
  );
  const leaf = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature'];
  // Members: servers to clients, and servers and clients to each other (peer TLS).
  certificate(
    dir,
    'member',
    `/CN=switchyard lab ${lab} etcd member`,
    [...leaf, 'subjectAltName=IP:127.0.0.1,DNS:localhost', 'extendedKeyUsage=serverAuth,clientAuth'],
    true,
  );
  certificate(dir, 'client', '/CN=root', [...leaf, 'extendedKeyUsage=clientAuth'], true);
  rmSync(join(dir, 'ca.key'));
  rmSync(join(dir, 'openssl.cnf'));
  tighten(dir);
  return pki;
}
