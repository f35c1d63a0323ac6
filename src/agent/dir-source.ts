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
import { allocate, applyModelChanges, IncrementalCalculation, type Allocations } from '../calc/index.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import { assembleModel, formatIssue, type ConvertedDocuments, type Model } from '../model/index.js';
import { DESIRED_FILE, SourceError, type DesiredSource, type DesiredState } from './desired.js';
import { ManifestCache, manifestRevision } from './manifest-cache.js';
import { changesBetween, implicitNamespaceChange } from './model-changes.js';
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
export type DirectorySourceStats = {
  /** Files parsed (first read, or content changed). */
  parses: number;
  /** Reads that built the IR from scratch (the first, or after a change the calculation refused). */
  fullBuilds: number;
  /** Reads turned into model changes for the incremental calculation. */
  incrementalBuilds: number;
  /** Model changes handed to the calculation so far. */
  modelChanges: number;
};

export class DirectorySource implements DesiredSource {
  readonly description: string;
  readonly stats: DirectorySourceStats = { parses: 0, fullBuilds: 0, incrementalBuilds: 0, modelChanges: 0 };
  private allocations: Partial<Allocations> | undefined;
  private readonly cache = new ManifestCache();
  private calc: IncrementalCalculation | undefined;
  /** The files behind `calc`'s model (their converted objects) and the state built from them. */
  private built:
    { revision: string; files: Map<string, ConvertedDocuments>; state: DesiredState } | undefined;

  constructor(
    readonly dir: string,
    private readonly opts: DirectorySourceOptions = {},
  ) {
    this.description = `dir:${dir}`;
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
    const parts = new Map(files.map((f, i) => [f, read.parts[i] as ConvertedDocuments]));
    const ir = this.incremental(parts) ?? this.full(read.parts, files);
    const state: DesiredState = { revision, ir, model: (this.calc as IncrementalCalculation).model };
    this.built = { revision, files: parts, state };
    return state;
  }

  /** The whole model of `parts`, validated as one input; throws a SourceError listing every issue. */
  private assemble(parts: readonly ConvertedDocuments[], files: readonly string[]): Model {
    const result = assembleModel(parts, files);
    if (!result.model)
      throw new SourceError(`invalid manifests:\n${result.issues.map(formatIssue).join('\n')}`);
    return result.model;
  }

  /**
   * The IR after the changes from the files read last to `parts`, from the calculation kept since
   * then; undefined when there is none yet, or it cannot apply them (a full build follows).
   */
  private incremental(parts: Map<string, ConvertedDocuments>): DesiredState['ir'] | undefined {
    const calc = this.calc;
    const before = this.built;
    if (!calc || !before) return undefined;
    const list = [...parts.values()];
    const diff = changesBetween(before.files, parts);
    let model: Model | undefined;
    // A file with issues, or objects added, removed or changed in what the checks across objects
    // read: validate the whole input. Otherwise the model stays valid as the last one was.
    if (diff.structural || list.some((p) => p.issues.length > 0)) {
      model = this.assemble(list, [...parts.keys()]);
      diff.changes.push(...implicitNamespaceChange(calc.model, model));
    }
    try {
      const allocations = diff.movesAllocations
        ? this.allocate(model ?? applyModelChanges(calc.model, diff.changes))
        : undefined;
      const { ir } = calc.apply(diff.changes, allocations);
      this.stats.incrementalBuilds++;
      this.stats.modelChanges += diff.changes.length;
      return ir;
    } catch {
      // The calculation kept its previous state: a full build reports the error if there is one.
      return undefined;
    }
  }

  /** The IR of the whole input, from scratch (a new calculation). */
  private full(parts: readonly ConvertedDocuments[], files: readonly string[]): DesiredState['ir'] {
    const model = this.assemble(parts, files);
    this.calc = new IncrementalCalculation(model, this.allocate(model), {
      ...(this.opts.node !== undefined ? { node: this.opts.node } : {}),
      policyMode: this.opts.policyMode ?? DEFAULT_POLICY_MODE,
    });
    this.stats.fullBuilds++;
    return this.calc.ir;
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

  watch(onChange: () => void): () => void {
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(this.dir, () => onChange());
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
