/** Which etcd a datastore command talks to: --etcd URL, --lab NAME (a cluster lab's), or $SWITCHYARD_ETCD. */
import { Option } from 'commander';
import { CliError } from './output.js';
import { errorMessage } from '../util/errors.js';

export interface TargetFlags {
  etcd?: string;
  lab?: string;
}

export const ETCD_ENV = 'SWITCHYARD_ETCD';

export function targetOptions(): Option[] {
  return [
    new Option('--etcd <url>', `etcd to use (http://127.0.0.1:PORT; default $${ETCD_ENV})`),
    new Option('--lab <name>', "a cluster lab's etcd (started by 'switchyard cluster up --name NAME')"),
  ];
}

export interface Target {
  url: string;
  /** Set when the etcd is a lab cluster's: the lab follows what is written. */
  lab?: string;
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
    // A lab cluster's etcd given by URL is still that lab's: its pods follow what is written.
    const { stateLabs, readState } = await import('../lab/state.js');
    const lab = stateLabs().find((name) => readState(name)?.cluster?.etcd === url);
    return { url, ...(lab ? { lab } : {}) };
  }
  if (flags.lab) {
    const { clusterEtcd } = await import('../lab/cluster.js');
    return { url: clusterEtcd(flags.lab).clientUrl, lab: flags.lab };
  }
  const fromEnv = process.env[ETCD_ENV];
  if (fromEnv) return resolveTarget({ etcd: parse(fromEnv, `$${ETCD_ENV}`) });
  const { DEFAULT_CLUSTER } = await import('../lab/cluster.js');
  const { readState } = await import('../lab/state.js');
  if (readState(DEFAULT_CLUSTER)?.cluster) return resolveTarget({ lab: DEFAULT_CLUSTER });
  throw new CliError(
    `which etcd? give --etcd URL or --lab NAME, set $${ETCD_ENV}, or start one with 'switchyard cluster up FILES'`,
    2,
  );
}
