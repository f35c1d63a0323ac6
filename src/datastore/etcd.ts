/**
 * The etcd side of the datastore: one client per URL, reads of the whole prefix at one revision,
 * writes as one transaction guarded by the sequence key, and watches from a revision.
 *
 * The client is set up for a datastore that comes and goes (etcd restarts in our fault tests):
 * unary calls give up after a few seconds instead of queueing, and a broken watch stream is
 * retried within two seconds rather than etcd3's default of up to thirty.
 */
import './quiet-grpc.js';
import { readFileSync } from 'node:fs';
import { ConstantBackoff, ExponentialBackoff, handleWhen, noop, retry } from 'cockatiel';
import { Etcd3, isRecoverableError, type IKeyValue, type Watcher } from 'etcd3';
import { CLUSTER_KEY, OBJECTS_PREFIX, PREFIX, SEQUENCE_KEY } from './keys.js';

const CALL_TIMEOUT_MS = 5000;

export class DatastoreError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'DatastoreError';
  }
}

export interface StoredObject {
  key: string;
  /** The manifest as JSON text, exactly as stored. */
  value: string;
  modRevision: number;
}

export interface Snapshot {
  /** The store's revision the snapshot was read at. */
  revision: number;
  objects: Map<string, StoredObject>;
  /** Mod revision of the sequence key (0 before the first write). */
  sequence: number;
  cluster: ClusterConfig;
}

export interface ClusterConfig {
  nodeCount?: number;
}

export interface WatchHandlers {
  /** One batch of changes, in order, and the revision the store is at after it. */
  onChanges(changes: Change[], revision: number): void;
  /** The watch cannot go on from where it was (the revision was compacted): list again. */
  onLost(reason: string): void;
  onConnection?(up: boolean, reason?: string): void;
}

export interface Change {
  type: 'put' | 'delete';
  key: string;
  value?: string;
  modRevision: number;
}

/** PEM files a client authenticates with (etcd's `--client-cert-auth`): readable by root only. */
export interface EtcdTlsFiles {
  /** The CA that signed the members' certificates (and this client's). */
  ca: string;
  cert: string;
  key: string;
}

/**
 * `http://127.0.0.1:2379`, or several members' URLs separated by commas (also accepted with an
 * `etcd:` scheme in front). Returns them normalised, comma-separated.
 */
export function parseEtcdUrl(url: string): string {
  const bare = url.startsWith('etcd:') ? url.slice('etcd:'.length) : url;
  return bare
    .split(',')
    .map((one) => {
      let parsed: URL;
      try {
        parsed = new URL(one);
      } catch {
        throw new DatastoreError(`not an etcd URL: '${url}' (expected http(s)://HOST:PORT[,…])`);
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
        throw new DatastoreError(`not an etcd URL: '${url}' (expected http(s)://HOST:PORT[,…])`);
      return `${parsed.protocol}//${parsed.host}`;
    })
    .join(',');
}

/** The members' URLs of a (parsed) etcd URL. */
export function etcdEndpoints(url: string): string[] {
  return parseEtcdUrl(url).split(',');
}

function readTls(tls: EtcdTlsFiles): { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer } {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      const hint = (e as NodeJS.ErrnoException).code === 'EACCES' ? ' (only root may use this etcd)' : '';
      throw new DatastoreError(`cannot read the etcd ${what} ${path}: ${describe(e)}${hint}`, { cause: e });
    }
  };
  return {
    rootCertificate: read('CA certificate', tls.ca),
    certChain: read('client certificate', tls.cert),
    privateKey: read('client key', tls.key),
  };
}

function describe(e: unknown): string {
  // gRPC appends an empty "Resolution note:" to connection errors: noise for a reader.
  return (e instanceof Error ? e.message : String(e)).replace(/\.?\s*Resolution note:\s*$/, '');
}

function revisionOf(s: string | number | undefined): number {
  return Number(s ?? 0);
}

export class EtcdStore {
  readonly url: string;
  private readonly client: Etcd3;

  /** `url`: one member's URL or several, comma-separated; `tls`: the client certificate (https). */
  constructor(url: string, tls?: EtcdTlsFiles) {
    this.url = parseEtcdUrl(url);
    const hosts = this.url.split(',');
    // grpc-js sends an IP address as the TLS server name, which Node deprecates (DEP0123, a
    // warning on every run): loopback members are checked as 'localhost' instead, a name the
    // lab's member certificate carries next to 127.0.0.1.
    const loopback = tls !== undefined && hosts.every((h) => new URL(h).hostname === '127.0.0.1');
    this.client = new Etcd3({
      hosts,
      ...(tls ? { credentials: readTls(tls) } : {}),
      dialTimeout: CALL_TIMEOUT_MS,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
      faultHandling: {
        // A circuit breaker would only add seconds of refusals after a member is back; with
        // several members, a call that cannot connect moves on to the next one anyway.
        host: () => noop,
        global: retry(handleWhen(isRecoverableError), {
          maxAttempts: 2,
          backoff: new ConstantBackoff(200),
        }),
        watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }).next(),
      },
      // Notice a dead connection (a partition drops packets silently) within seconds.
      // (Only while a call or watch is open: etcd counts pings on an idle connection as abuse.)
      grpcOptions: {
        'grpc.keepalive_time_ms': 5000,
        'grpc.keepalive_timeout_ms': 3000,
        'grpc.keepalive_permit_without_calls': 0,
        // After a partition heals or etcd restarts, reconnect within two seconds, not minutes.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 2000,
        ...(loopback ? { 'grpc.ssl_target_name_override': 'localhost' } : {}),
      },
    });
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const limit = /too many operations|request is too large/.test(describe(e))
        ? " (this etcd's --max-txn-ops / --max-request-bytes are lower than one apply needs: apply fewer files at a time)"
        : '';
      throw new DatastoreError(`etcd at ${this.url}: ${what} failed: ${describe(e)}${limit}`);
    }
  }

  /** Every object, the cluster settings and the sequence, at one revision. */
  async snapshot(): Promise<Snapshot> {
    const res = await this.call('reading the desired state', () =>
      this.client.getAll().prefix(PREFIX).exec(),
    );
    const objects = new Map<string, StoredObject>();
    let sequence = 0;
    let cluster: ClusterConfig = {};
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key.startsWith(OBJECTS_PREFIX)) objects.set(key, toStored(kv));
      else if (key === SEQUENCE_KEY) sequence = revisionOf(kv.mod_revision);
      else if (key === CLUSTER_KEY) cluster = parseCluster(kv.value.toString());
    }
    return { revision: revisionOf(res.header.revision), objects, sequence, cluster };
  }

  /** The store's current revision, from the cheapest read there is. */
  async snapshotRevision(): Promise<number> {
    const res = await this.call('reading the revision', () => this.client.get(SEQUENCE_KEY).exec());
    return revisionOf(res.header.revision);
  }

  /**
   * Writes `puts` and removes `deletes` in one transaction, if nobody wrote since the snapshot
   * whose sequence is `sequence`. Returns the new revision, or undefined when someone did.
   */
  async commit(
    sequence: number,
    puts: ReadonlyMap<string, string>,
    deletes: readonly string[],
  ): Promise<number | undefined> {
    const ops = [
      ...[...puts].map(([k, v]) => this.client.put(k).value(v)),
      ...deletes.map((k) => this.client.delete().key(k)),
      this.client.put(SEQUENCE_KEY).value(String(Date.now())),
    ];
    const res = await this.call(`writing ${puts.size + deletes.length} objects in one transaction`, () =>
      this.client
        .if(SEQUENCE_KEY, 'Mod', '==', sequence)
        .then(...ops)
        .commit(),
    );
    return res.succeeded ? revisionOf(res.header.revision) : undefined;
  }

  async setCluster(config: ClusterConfig): Promise<number> {
    const res = await this.call('writing the cluster settings', () =>
      this.client.put(CLUSTER_KEY).value(JSON.stringify(config)).exec(),
    );
    return revisionOf(res.header.revision);
  }

  /** Changes after `fromRevision`, as they happen; returns the function that stops watching. */
  async watch(fromRevision: number, handlers: WatchHandlers): Promise<() => void> {
    const watcher: Watcher = await this.call('watching', () =>
      this.client
        .watch()
        .prefix(PREFIX)
        .startRevision(String(fromRevision + 1))
        .create(),
    );
    watcher.on('data', (res) => {
      const changes: Change[] = res.events.map((ev) => ({
        type: ev.type === 'Put' ? 'put' : 'delete',
        key: ev.kv.key.toString(),
        ...(ev.type === 'Put' ? { value: ev.kv.value.toString() } : {}),
        modRevision: revisionOf(ev.kv.mod_revision),
      }));
      handlers.onChanges(changes, revisionOf(res.header.revision));
    });
    // etcd cancels a watch whose start revision was compacted away: only a fresh list can go on.
    watcher.on('error', (e: Error) => handlers.onLost(e.message));
    watcher.on('disconnected', (e: Error) => handlers.onConnection?.(false, e.message));
    watcher.on('connected', () => handlers.onConnection?.(true));
    return () => void watcher.cancel().catch(() => undefined);
  }

  /** This member's id and its leader's (a member is the leader when they are equal). */
  async memberStatus(): Promise<{ memberId: string; leaderId: string }> {
    const res = await this.call('reading the member status', () => this.client.maintenance.status());
    return { memberId: String(res.header.member_id), leaderId: String(res.leader) };
  }

  /** Drops history before `revision` (tests and the compaction fault use it). */
  async compact(revision: number): Promise<void> {
    await this.call('compacting', () =>
      this.client.kv.compact({ revision: String(revision), physical: true }),
    );
  }

  close(): void {
    this.client.close();
  }
}

function toStored(kv: IKeyValue): StoredObject {
  return { key: kv.key.toString(), value: kv.value.toString(), modRevision: revisionOf(kv.mod_revision) };
}

/** The cluster settings key's value (anything unreadable means defaults). */
export function parseCluster(text: string): ClusterConfig {
  try {
    const v = JSON.parse(text) as { nodeCount?: unknown };
    return typeof v.nodeCount === 'number' && v.nodeCount > 0 ? { nodeCount: v.nodeCount } : {};
  } catch {
    return {};
  }
}
