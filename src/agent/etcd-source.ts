/**
 * Desired state from etcd, informer style: list once, then follow a watch from that revision,
 * keeping every object in memory and on disk.
 *
 * - The cache is written to the agent's state directory after each change it reads, so a
 *   restarted agent starts from it (even while etcd is down) and resumes watching from the
 *   revision it had, instead of listing everything again.
 * - A watch whose revision was compacted away cannot resume: the source lists again.
 * - When etcd is unreachable the last state read stays the desired state; the watch keeps
 *   reconnecting and catches up from its revision.
 *
 * The agent's slice: every object is read (peers' addresses and service backends come from pods
 * anywhere), but the IR built from them holds rule sets for this node's endpoints only.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { allocate, DEFAULT_NODE_COUNT } from '../calc/index.js';
import { DEFAULT_POLICY_MODE, type PolicyMode } from '../ir/decision-table.js';
import { storedDocument } from '../datastore/documents.js';
import {
  EtcdStore,
  parseCluster,
  type Change,
  type ClusterConfig,
  type EtcdTlsFiles,
} from '../datastore/etcd.js';
import { CLUSTER_KEY, OBJECTS_PREFIX } from '../datastore/keys.js';
import { convertDocuments, type ConvertedDocuments, type Model } from '../model/index.js';
import { ETCD_SOURCE_PREFIX, SourceError, type DesiredSource, type DesiredState } from './desired.js';
import { errorMessage } from '../util/errors.js';
import { writePrivateFileAtomic } from '../util/private-files.js';
import { SourceCalculation, type SourceCalculationStats } from './source-calculation.js';

export const ETCD_CACHE_FILE = 'etcd-cache.json';
/** Following etcd again after a failure: after RETRY_MS, doubling up to RETRY_MAX_MS. */
const RETRY_MS = 500;
const RETRY_MAX_MS = 5000;
/** The cache on disk is written at most this often after the first time. */
const SAVE_MS = 1000;

interface Cache {
  /** The revision of the newest change in the cache (the store's revision when listed). */
  revision: number;
  objects: Map<string, string>;
  cluster: ClusterConfig;
}

interface CacheFile {
  version: 1;
  url: string;
  revision: number;
  cluster: ClusterConfig;
  objects: [string, string][];
}

export interface EtcdSourceOptions {
  node: string;
  stateDir: string;
  logger?: Logger;
  /** Default DEFAULT_POLICY_MODE. */
  policyMode?: PolicyMode;
  /** The client certificate (an etcd with `--client-cert-auth`). */
  tls?: EtcdTlsFiles;
}

/** What the source has done, for status and tests. */
export type EtcdSourceStats = Partial<SourceCalculationStats> & {
  lists: number;
  /** Starts that resumed from the cache on disk instead of listing. */
  resumes: number;
  /** Watches lost to compaction (each followed by a list). */
  compactions: number;
  events: number;
  connected: boolean;
  revision?: number;
};

export class EtcdSource implements DesiredSource {
  readonly description: string;
  readonly stats: EtcdSourceStats = { lists: 0, resumes: 0, compactions: 0, events: 0, connected: false };
  private readonly store: EtcdStore;
  private cache: Cache | undefined;
  private fromDisk = false;
  private built: { revision: number; state: DesiredState } | undefined;
  private persisted = -1;
  private notify: ((complete?: boolean) => void) | undefined;
  private cancelWatch: (() => void) | undefined;
  private watching = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 0;
  private saveTimer: NodeJS.Timeout | undefined;
  /** The cluster's node count the calculation was built with. */
  private nodeCount: number | undefined;
  /** Each stored object's value and what it converted to. */
  private readonly converted = new Map<string, { value: string; part: ConvertedDocuments }>();
  private readonly calculation: SourceCalculation;
  /** The revision an invalid state is reported at. */
  private invalidRevision = 0;

  constructor(
    url: string,
    private readonly opts: EtcdSourceOptions,
  ) {
    this.store = new EtcdStore(url, opts.tls);
    this.calculation = new SourceCalculation({
      build: { node: opts.node, policyMode: opts.policyMode ?? DEFAULT_POLICY_MODE },
      allocate: (model) => allocate(model, {}, { nodeCount: this.nodeCount ?? DEFAULT_NODE_COUNT }),
      invalid: () => `the desired state at revision ${this.invalidRevision} is invalid`,
    });
    this.description = `${ETCD_SOURCE_PREFIX}${this.store.url}`;
  }

  private get cachePath(): string {
    return join(this.opts.stateDir, ETCD_CACHE_FILE);
  }

  private loadCache(): Cache | undefined {
    if (!existsSync(this.cachePath)) return undefined;
    try {
      const file = JSON.parse(readFileSync(this.cachePath, 'utf8')) as CacheFile;
      if (file.version !== 1 || file.url !== this.store.url) return undefined;
      return { revision: file.revision, objects: new Map(file.objects), cluster: file.cluster };
    } catch {
      return undefined;
    }
  }

  private saveCache(cache: Cache): void {
    if (this.persisted === cache.revision) return;
    const file: CacheFile = {
      version: 1,
      url: this.store.url,
      revision: cache.revision,
      cluster: cache.cluster,
      objects: [...cache.objects],
    };
    writePrivateFileAtomic(this.cachePath, JSON.stringify(file), `${this.cachePath}.tmp`);
    this.persisted = cache.revision;
  }

  private async list(): Promise<Cache> {
    const snap = await this.store.snapshot();
    this.stats.lists++;
    const objects = new Map([...snap.objects].map(([k, o]) => [k, o.value]));
    this.cache = { revision: snap.revision, objects, cluster: snap.cluster };
    this.fromDisk = false;
    this.opts.logger?.info({ revision: snap.revision, objects: objects.size }, 'listed the desired state');
    return this.cache;
  }

  async read(): Promise<DesiredState> {
    if (!this.cache) {
      this.cache = this.loadCache();
      this.fromDisk = this.cache !== undefined;
    }
    const cache =
      this.cache ??
      (await this.list().catch((e: Error) => {
        throw new SourceError(e.message);
      }));
    if (this.built?.revision === cache.revision) return this.built.state;
    // Stored pods carry their node and address and services their cluster IP (`switchyard apply`
    // allocated them), so allocating only reads them back and lists the nodes; it is
    // deterministic, so an object stored without them would still come out the same on every
    // node. The node count is the cluster's: when it changes, everything is built again.
    const nodeCount = cache.cluster.nodeCount ?? DEFAULT_NODE_COUNT;
    if (nodeCount !== this.nodeCount) {
      this.nodeCount = nodeCount;
      this.calculation.reset();
    }
    this.invalidRevision = cache.revision;
    const { parts, touched } = this.convert(cache);
    const { ir, change } = this.calculation.build(parts, touched);
    Object.assign(this.stats, this.calculation.stats);
    const state: DesiredState = {
      revision: String(cache.revision),
      ir,
      ...(change ? { change } : {}),
      model: this.calculation.model as Model,
    };
    this.built = { revision: cache.revision, state };
    this.stats.revision = cache.revision;
    this.saveCacheSoon(cache);
    return state;
  }

  /**
   * Every stored object as converted documents (keyed as stored), converting only those whose
   * value changed since the last read; `touched` names them and those deleted since.
   */
  private convert(cache: Cache): { parts: Map<string, ConvertedDocuments>; touched: Set<string> } {
    const parts = new Map<string, ConvertedDocuments>();
    const touched = new Set<string>();
    for (const [key, value] of cache.objects) {
      let c = this.converted.get(key);
      if (c?.value !== value) {
        c = { value, part: convertDocuments([storedDocument(key, value)]) };
        this.converted.set(key, c);
        touched.add(key);
      }
      parts.set(key, c.part);
    }
    for (const key of this.converted.keys())
      if (!cache.objects.has(key)) {
        this.converted.delete(key);
        touched.add(key);
      }
    return { parts, touched };
  }

  /**
   * The cache on disk follows the one in memory: at once the first time (a restart then resumes
   * instead of listing), then at most every SAVE_MS (writing every object is not worth doing on
   * each change: a restart from an older revision replays the events since).
   */
  private saveCacheSoon(cache: Cache): void {
    if (this.persisted < 0) return this.saveCache(cache);
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      if (this.cache) this.saveCache(this.cache);
    }, SAVE_MS);
    this.saveTimer.unref();
  }

  watch(onChange: (complete?: boolean) => void): () => void {
    this.notify = onChange;
    void this.follow();
    return () => {
      this.stopped = true;
      clearTimeout(this.retryTimer);
      if (this.saveTimer && this.cache) this.saveCache(this.cache);
      clearTimeout(this.saveTimer);
      this.cancelWatch?.();
      this.store.close();
    };
  }

  /** Lists if it has to, then watches from the cache's revision; retries until stopped. */
  private async follow(): Promise<void> {
    if (this.stopped || this.watching) return;
    this.watching = true;
    try {
      let cache = this.cache;
      let listed = false;
      if (cache && this.fromDisk) {
        // A cache from before a restart is only good if this is the store it came from.
        const now = await this.store.snapshotRevision();
        if (now < cache.revision) cache = undefined;
        else this.stats.resumes++;
        this.fromDisk = false;
      }
      if (!cache) {
        cache = await this.list();
        listed = true;
      }
      const cancel = await this.store.watch(cache.revision, {
        onChanges: (changes) => this.applyChanges(changes),
        onLost: (reason) => this.lost(reason),
        onConnection: (up, reason) => {
          this.stats.connected = up;
          if (up) return;
          this.opts.logger?.warn({ reason }, 'lost etcd: keeping the last desired state');
          // etcd3 would resume this watch from the newest revision it was told about, which can
          // be past events not delivered yet; a new watch from the cache's own revision cannot.
          this.restartWatch();
        },
      });
      this.stats.connected = true;
      if (this.stopped) cancel();
      else this.cancelWatch = cancel;
      if (listed) this.notify?.();
    } catch (e) {
      this.watching = false;
      // Once per outage at warn level: etcd may stay away for a long time.
      const log = this.retryMs === 0 ? this.opts.logger?.warn : this.opts.logger?.debug;
      log?.call(this.opts.logger, { err: errorMessage(e) }, 'cannot follow etcd yet: retrying');
      this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MS, this.retryMs * 2));
      if (!this.stopped) this.retryTimer = setTimeout(() => void this.follow(), this.retryMs);
      return;
    }
    this.retryMs = 0;
  }

  private applyChanges(changes: readonly Change[]): void {
    const cache = this.cache;
    if (!cache) return;
    for (const c of changes) {
      if (c.key.startsWith(OBJECTS_PREFIX)) {
        if (c.type === 'put' && c.value !== undefined) cache.objects.set(c.key, c.value);
        else cache.objects.delete(c.key);
      } else if (c.key === CLUSTER_KEY && c.value !== undefined) {
        cache.cluster = parseCluster(c.value);
      }
      // Only revisions of changes seen: a watch response's header may run ahead of its events.
      cache.revision = Math.max(cache.revision, c.modRevision);
    }
    this.stats.events += changes.length;
    // A watch response is a whole transaction's changes: read at once.
    this.notify?.(true);
  }

  private restartWatch(): void {
    this.cancelWatch?.();
    this.cancelWatch = undefined;
    this.watching = false;
    clearTimeout(this.retryTimer);
    if (!this.stopped) this.retryTimer = setTimeout(() => void this.follow(), RETRY_MS);
  }

  private lost(reason: string): void {
    this.stats.compactions++;
    this.opts.logger?.warn({ reason }, 'the watch cannot resume (compacted): listing again');
    this.cancelWatch?.();
    this.cancelWatch = undefined;
    this.watching = false;
    this.cache = undefined;
    void this.follow();
  }
}
