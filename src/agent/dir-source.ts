/**
 * A watched directory as the desired state: either a compiled `desired.json` (what the lab writes
 * for its agents: the IR with addresses the lab allocated, the model and the pods' cgroups), or
 * Kubernetes YAML manifests, which the agent allocates and turns into the IR itself. Its
 * allocations are kept in its state directory, so addresses and placement stay put across
 * updates and restarts.
 *
 * Manifests are read incrementally: the ManifestCache parses only files whose content changed,
 * the objects those files held before and hold now become ModelChanges, and the
 * IncrementalCalculation recomputes only what they affect (unchanged IR objects keep their
 * identity, so the backend's apply skips them). A change that moves no pod or service address
 * reuses the allocations as they are.
 */
import { existsSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { allocate, type Allocations } from '../calc/index.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import type { ConvertedDocuments, Model } from '../model/index.js';
import { DESIRED_FILE, SourceError, type DesiredSource, type DesiredState } from './desired.js';
import { ManifestCache, manifestRevision } from './manifest-cache.js';
import { SourceCalculation, type SourceCalculationStats } from './source-calculation.js';
import { errorMessage } from '../util/errors.js';
import { writePrivateFileAtomic } from '../util/private-files.js';

const MANIFEST = /\.(ya?ml|json)$/;
/** In the agent's state directory: the allocations of the manifests read last. */
export const ALLOCATIONS_FILE = 'allocations.json';
/** fs.watch misses events on some file systems and after renames: a cheap listing check backs it up. */
const POLL_MS = 1000;

export interface DirectorySourceOptions {
  /** Nodes to spread pods without spec.nodeName over (manifest directories only). */
  nodeCount?: number;
  /** Default DEFAULT_POLICY_MODE. */
  policyMode?: PolicyMode;
  /**
   * The agent's node (manifest directories only): the IR then holds rule sets for this node's
   * endpoints alone (every endpoint, set member and service stays), which is all its dataplane
   * installs and a fraction of the cluster's rules to build and keep.
   */
  node?: string;
  /**
   * Where the allocations of the manifests read last are kept (ALLOCATIONS_FILE), so pods keep
   * their node and address across updates and agent restarts. Without it, only in memory.
   */
  stateDir?: string;
}

/** What the directory source did, for status and tests. */
export type DirectorySourceStats = SourceCalculationStats & {
  /** Files parsed (first read, or content changed). */
  parses: number;
};

export class DirectorySource implements DesiredSource {
  readonly description: string;
  readonly stats: DirectorySourceStats = { parses: 0, fullBuilds: 0, incrementalBuilds: 0, modelChanges: 0 };
  private allocations: Partial<Allocations> | undefined;
  private readonly cache = new ManifestCache();
  private readonly calculation: SourceCalculation;
  /** The state built last, and its revision. */
  private built: { revision: string; state: DesiredState } | undefined;

  constructor(
    readonly dir: string,
    private readonly opts: DirectorySourceOptions = {},
  ) {
    this.description = `dir:${dir}`;
    this.calculation = new SourceCalculation({
      build: {
        ...(opts.node !== undefined ? { node: opts.node } : {}),
        policyMode: opts.policyMode ?? DEFAULT_POLICY_MODE,
      },
      allocate: (model) => this.allocate(model),
      invalid: () => 'invalid manifests',
    });
  }

  private manifestFiles(): string[] {
    return readdirSync(this.dir)
      .filter((n) => MANIFEST.test(n) && n !== DESIRED_FILE && !n.startsWith('.'))
      .sort()
      .map((n) => join(this.dir, n));
  }

  /** Names, sizes and modification times: changes whenever a file is written or renamed into place. */
  private signature(): string {
    try {
      return readdirSync(this.dir)
        .sort()
        .map((n) => {
          const s = statSync(join(this.dir, n), { bigint: true });
          return `${n}:${s.size}:${s.mtimeNs}:${s.ino}`;
        })
        .join('|');
    } catch {
      return 'unreadable';
    }
  }

  async read(): Promise<DesiredState> {
    if (!existsSync(this.dir)) throw new SourceError(`source directory ${this.dir} does not exist`);
    const compiled = join(this.dir, DESIRED_FILE);
    return existsSync(compiled) ? readCompiled(compiled) : this.readManifests();
  }

  private readManifests(): DesiredState {
    const files = this.manifestFiles();
    if (files.length === 0) throw new SourceError(`no manifests (*.yaml, *.yml, *.json) in ${this.dir}`);
    const read = this.cache.read(files);
    this.stats.parses = this.cache.stats.parses;
    const revision = manifestRevision(files, read.hashes);
    if (this.built?.revision === revision) return this.built.state;
    const { ir, change } = this.calculation.build(
      new Map(files.map((f, i) => [f, read.parts[i] as ConvertedDocuments])),
    );
    Object.assign(this.stats, this.calculation.stats);
    const state: DesiredState = {
      revision,
      ir,
      ...(change ? { change } : {}),
      model: this.calculation.model as Model,
    };
    this.built = { revision, state };
    return state;
  }

  /** Allocates `model` keeping what the manifests read last were given, and keeps the result. */
  private allocate(model: Model): Allocations {
    const path = this.opts.stateDir === undefined ? undefined : join(this.opts.stateDir, ALLOCATIONS_FILE);
    this.allocations ??= path === undefined ? {} : readAllocations(path);
    const next = allocate(model, this.allocations, {
      ...(this.opts.nodeCount ? { nodeCount: this.opts.nodeCount } : {}),
    });
    if (path !== undefined && !isDeepStrictEqual(next, this.allocations)) {
      writePrivateFileAtomic(path, JSON.stringify(next), `${path}.tmp`);
    }
    this.allocations = next;
    return next;
  }

  /**
   * Whether the file `name` of the directory is input: a manifest, the compiled state, or a file
   * a manifest's object reads (a Prefilter's list). Others (`x.yaml.tmp` being written before a
   * rename) wake nobody.
   */
  private isInput(name: string): boolean {
    if (name === DESIRED_FILE) return true;
    if (MANIFEST.test(name) && !name.startsWith('.')) return true;
    return this.cache.reads(join(this.dir, name));
  }

  watch(onChange: (complete?: boolean) => void): () => void {
    let watcher: FSWatcher | undefined;
    try {
      // A manifest renamed into place is whole: the agent may read it at once. Events without a
      // name are taken as a change that may not be complete.
      watcher = watch(this.dir, (event, name) => {
        if (name === null) onChange(false);
        else if (this.isInput(name)) onChange(event === 'rename');
      });
      watcher.on('error', () => undefined);
    } catch {
      // polling below still notices changes
    }
    let last = this.signature();
    const timer = setInterval(() => {
      const now = this.signature();
      if (now !== last) {
        last = now;
        onChange();
      }
    }, POLL_MS);
    timer.unref();
    return () => {
      watcher?.close();
      clearInterval(timer);
    };
  }
}

function readCompiled(path: string): DesiredState {
  let state: DesiredState;
  try {
    state = JSON.parse(readFileSync(path, 'utf8')) as DesiredState;
  } catch (e) {
    throw new SourceError(`${path}: not valid JSON: ${errorMessage(e)}`, { cause: e });
  }
  if (typeof state.revision !== 'string' || state.ir?.version !== 1)
    throw new SourceError(`${path}: expected {revision, ir} with an IR of version 1`);
  return state;
}

/** None yet, or unreadable (a torn write cannot happen, a hand edit can): allocate afresh. */
function readAllocations(path: string): Partial<Allocations> {
  try {
    const value = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return typeof value === 'object' && value !== null ? (value as Partial<Allocations>) : {};
  } catch {
    return {};
  }
}
