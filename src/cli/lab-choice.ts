/**
 * Which lab a command acts on, decided the same way by every command (docs/cli.md):
 * `--lab NAME`, else $SWITCHYARD_LAB, else the only lab there is. `--name` is the old spelling of
 * `--lab`, kept hidden so scripts written for it still run. Errors name the labs that exist.
 */
import { Option, type Command } from 'commander';
import { labNameError } from '../lab/names.js';
import { readState, stateLabs } from '../lab/state.js';
import { CliError } from './output.js';

export const LAB_ENV = 'SWITCHYARD_LAB';

export interface LabFlags {
  lab?: string;
  /** Deprecated spelling of --lab. */
  name?: string;
}

/** `--lab NAME` and the hidden `--name NAME` it replaces. */
export function addLabOptions(
  cmd: Command,
  what = 'the lab to act on',
  fallback = `$${LAB_ENV}, else the only lab`,
): Command {
  return cmd
    .addOption(new Option('--lab <name>', `${what} (default: ${fallback})`))
    .addOption(new Option('--name <lab>', 'deprecated: use --lab').hideHelp());
}

/** --lab or --name (the same option), else $SWITCHYARD_LAB; undefined when none names a lab. */
export function namedLab(flags: LabFlags): { name: string; from: string } | undefined {
  if (flags.lab !== undefined && flags.name !== undefined && flags.lab !== flags.name)
    throw new CliError(`--name is the old spelling of --lab: give one of them, not both`, 2, {
      code: 'conflicting-options',
    });
  const flag = flags.lab ?? flags.name;
  const env = process.env[LAB_ENV];
  const chosen =
    flag !== undefined
      ? { name: flag, from: flags.lab !== undefined ? '--lab' : '--name' }
      : env
        ? { name: env, from: `$${LAB_ENV}` }
        : undefined;
  if (!chosen) return undefined;
  const invalid = labNameError(chosen.name);
  if (invalid) throw new CliError(`${chosen.from}: ${invalid}`, 2, { code: 'invalid-lab-name' });
  return chosen;
}

/** Labs with a state directory. Not root: none can be read, and the caller's error says so. */
export function labsUp(): string[] {
  try {
    return stateLabs();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EACCES') return [];
    throw e;
  }
}

function isCluster(lab: string): boolean {
  try {
    return readState(lab)?.cluster !== undefined;
  } catch {
    return false;
  }
}

/** `labs up: a, b` or `no lab is up`, for error messages. */
export function labsUpText(labs: readonly string[] = labsUp()): string {
  return labs.length > 0 ? `labs up: ${labs.join(', ')}` : 'no lab is up';
}

export function labNotUp(name: string, from = '--lab', labs: readonly string[] = labsUp()): CliError {
  return new CliError(
    `lab '${name}' is not up (${from}); ${labsUpText(labs)}` +
      (labs.length > 0 ? ' — choose one with --lab' : " — start one with 'switchyard lab up FILES'"),
    1,
    { code: 'lab-not-found', details: { lab: name, labs } },
  );
}

export function severalLabs(labs: readonly string[], kind = 'labs'): CliError {
  return new CliError(
    `several ${kind} are up (${labs.join(', ')}) — choose one with --lab NAME or $${LAB_ENV}`,
    2,
    { code: 'lab-ambiguous', details: { labs } },
  );
}

export interface ChoiceRules {
  /**
   * `lab up`, `cluster up`: the lab may not exist yet. Without a name and with no lab to take,
   * this one is created.
   */
  create?: string;
  /** Cluster commands: only cluster labs are candidates for the default. */
  clusters?: boolean;
}

/** The lab a command acts on: named, or the only candidate; otherwise a usage error listing them. */
export function chooseLab(flags: LabFlags, rules: ChoiceRules = {}): string {
  const all = labsUp();
  const named = namedLab(flags);
  if (named) {
    if (rules.create === undefined && !all.includes(named.name)) throw labNotUp(named.name, named.from, all);
    return named.name;
  }
  // `lab up` never takes a cluster lab by default (nor `cluster up` a plain lab): converging one as
  // the other would change what it is.
  const candidates =
    rules.clusters === true
      ? all.filter(isCluster)
      : rules.create !== undefined
        ? all.filter((l) => !isCluster(l))
        : all;
  const kind = rules.clusters === true ? 'clusters' : 'labs';
  if (candidates.length === 1 && candidates[0] !== undefined) return candidates[0];
  if (candidates.length > 1) throw severalLabs(candidates, kind);
  if (rules.create !== undefined) return rules.create;
  throw new CliError(
    rules.clusters === true
      ? `no cluster is up (${labsUpText(all)}): start one with 'switchyard cluster up FILES'`
      : `no lab is up: start one with 'switchyard lab up FILES'`,
    1,
    { code: 'no-lab', details: { labs: all } },
  );
}
