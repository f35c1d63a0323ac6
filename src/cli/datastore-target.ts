/**
 * Which etcd a datastore command talks to: --etcd URL, --lab NAME (a cluster lab's), or
 * $SWITCHYARD_ETCD. A lab's etcd wants the lab's client certificate (root's alone): it is found
 * from the lab, also when the lab's etcd is given by URL.
 */
import { Option } from 'commander';
import type { EtcdTlsFiles } from '../datastore/etcd.js';
import { chooseLab, LAB_ENV, labNotUp, labsUp } from './lab-choice.js';
import { CliError } from './output.js';
import { errorMessage } from '../util/errors.js';

export interface TargetFlags {
  etcd?: string;
  lab?: string;
}

export const ETCD_ENV = 'SWITCHYARD_ETCD';

export function targetOptions(): Option[] {
  return [
    new Option('--etcd <url>', `etcd to use (http(s)://127.0.0.1:PORT[,…]; default $${ETCD_ENV})`),
    new Option(
      '--lab <name>',
      "a cluster lab's etcd (started by 'switchyard cluster up --lab NAME'; default: $SWITCHYARD_LAB, else the only cluster)",
    ),
  ];
}

export interface Target {
  url: string;
  /** Set when the etcd is a lab cluster's: the lab follows what is written. */
  lab?: string;
  /** The client certificate of a lab's etcd. */
  tls?: EtcdTlsFiles;
}

/** A lab's etcd wants root's certificate (and its state is root's): say so before reading anything. */
async function requireRootFor(lab: string): Promise<void> {
  const { requireRoot } = await import('../netns/index.js');
  requireRoot(`using the etcd of cluster lab '${lab}'`);
}

export async function resolveTarget(flags: TargetFlags): Promise<Target> {
  if (flags.etcd && flags.lab) throw new CliError('give --etcd or --lab, not both', 2);
  const { parseEtcdUrl } = await import('../datastore/etcd.js');
  const parse = (url: string, where: string): string => {
    try {
      return parseEtcdUrl(url);
    } catch (e) {
      throw new CliError(`${where}: ${errorMessage(e)}`, 2, { cause: e });
    }
  };
  if (flags.etcd) {
    const url = parse(flags.etcd, '--etcd');
    // A lab cluster's etcd given by URL (or one member's) is still that lab's: its pods follow
    // what is written, and it wants the lab's certificate.
    const { stateLabs, readState } = await import('../lab/state.js');
    const { readEtcdInfo } = await import('../lab/etcd.js');
    const wanted = url.split(',');
    // Labs' state is root's alone: a user who cannot see it cannot use a lab's etcd either.
    const labs = process.getuid?.() === 0 ? stateLabs() : [];
    for (const name of labs) {
      const info = readEtcdInfo(name);
      if (!info?.members.some((m) => wanted.includes(m.clientUrl))) continue;
      return { url, tls: info.tls, ...(readState(name)?.cluster ? { lab: name } : {}) };
    }
    return { url };
  }
  if (flags.lab) {
    await requireRootFor(flags.lab);
    if (!labsUp().includes(flags.lab)) throw labNotUp(flags.lab);
    const { clusterEtcd } = await import('../lab/cluster.js');
    const info = clusterEtcd(flags.lab);
    return { url: info.clientUrl, lab: flags.lab, tls: info.tls };
  }
  const fromEnv = process.env[ETCD_ENV];
  if (fromEnv) return resolveTarget({ etcd: parse(fromEnv, `$${ETCD_ENV}`) });
  // The rest of the lab choice (docs/cli.md): $SWITCHYARD_LAB, else the only cluster lab.
  const { stateLabs } = await import('../lab/state.js');
  if (process.env[LAB_ENV]) return resolveTarget({ lab: chooseLab({}) });
  try {
    stateLabs();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EACCES') throw e;
    const { requireRoot } = await import('../netns/index.js');
    requireRoot("using a cluster lab's etcd (the default without --etcd)");
  }
  try {
    return await resolveTarget({ lab: chooseLab({}, { clusters: true }) });
  } catch (e) {
    if (!(e instanceof CliError) || e.code !== 'no-lab') throw e;
  }
  throw new CliError(
    `which etcd? give --etcd URL or --lab NAME, set $${ETCD_ENV} or $${LAB_ENV}, or start one with 'switchyard cluster up FILES'`,
    2,
    { code: 'no-lab' },
  );
}
