/**
 * The contents of the maps the control plane writes (IP and IP-port sets, the prefilter trie, the
 * node's switches, every decision-table trie, the scope's services and backends), as digests for
 * the drift fingerprint. Maps the programs write themselves (conntrack, counters, flows,
 * affinity, reverse NAT) are traffic, not drift, and are left out.
 *
 * Cost: a digest reads every element (two syscalls each; LPM tries have no batch lookup), about
 * 1 µs per element. So each map's digest is kept with the element count the kernel reports for it
 * (fdinfo `memlock`, proportional to the elements of tries and on-demand hashes: one small read):
 * a different count is a new scan at once, an equal count reuses the digest until the map is due
 * again, RESCAN_DUTY times what its last scan took. Small maps are read on every poll; a
 * 100 000-entry prefilter once every few seconds, while an entry added or removed there is seen on
 * the next poll. A digest is order-independent (content-sum.ts), so after our own apply the maps
 * we keep a shadow of take the shadow's digest (seedContentDigest), verified by the next read that
 * falls due; maps written without one are forgotten, and a failed apply forgets every digest.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  BpfMap,
  closeFd,
  codecs,
  isPinned,
  mapMemlock,
  openMapId,
  openMapPin,
  readMapInfo,
  walkMapRaw,
  type OpenedMap,
} from '../../bpf/index.js';
import { ContentSum } from './content-sum.js';
import { MAP } from './layout.js';
import { mapPinPath } from './maps.js';
import { pinReplacing } from './meta.js';
import { SVC_MAP } from './services-layout.js';
import { NP_MAP } from './nodeport-layout.js';

/** A map is read again after RESCAN_DUTY times its last read: at most 1/RESCAN_DUTY of a core. */
const RESCAN_DUTY = 20;

/** Node maps whose every element the control plane chose. */
export const NODE_CONTENT_MAPS = [
  MAP.ipSets,
  MAP.portSets,
  MAP.prefilter,
  MAP.prefilter6,
  MAP.config,
  NP_MAP.services,
  NP_MAP.backends,
] as const;
/** The scope's service maps the control plane writes (affinity and revnat are the programs'). */
const SERVICE_CONTENT_MAPS = [SVC_MAP.services, SVC_MAP.backends] as const;
/** What every node agent of the scope recorded after writing the service maps (see recordServices). */
export const SERVICES_RECORD = 'svc_digest';
const DIGEST_BYTES = 32;
const record = codecs.bytes(DIGEST_BYTES);

interface Scan {
  /** Map id, element count and whatever else must match for the digest to stand. */
  key: string;
  digest: string;
  at: number;
  costMs: number;
}

const scans = new Map<number, Scan>();

/** Forgets every digest: after our own apply the next fingerprint reads every map in full. */
export function forgetContentScans(): void {
  scans.clear();
}

/** The order-independent sum of every element (content-sum.ts): what a shadow computes without reading. */
function scanMap(m: OpenedMap): Buffer {
  const sum = new ContentSum();
  walkMapRaw(m.fd, m.info, (key, value) => sum.add(key, value));
  return sum.bytes();
}

function scanKey(m: OpenedMap, also: string): string {
  return `${m.info.id}:${mapMemlock(m.fd)}:${also}`;
}

/** The digest of a map's contents, reused while its element count stands and it is not due. */
function contentDigest(m: OpenedMap, also = ''): string {
  const key = scanKey(m, also);
  const now = performance.now();
  const last = scans.get(m.info.id);
  if (last && last.key === key && now - last.at < last.costMs * RESCAN_DUTY) return last.digest;
  const digest = scanMap(m).toString('hex');
  const at = performance.now();
  scans.set(m.info.id, { key, digest, at, costMs: at - now });
  return digest;
}

/**
 * After our own write of a map whose contents we know (a shadow's sum): the digest the next
 * fingerprint uses for it, as if just read, without the read. The kernel is compared with it when
 * the map is next due (RESCAN_DUTY times its last read, or at once if its element count changes),
 * so a change made between our write and that read is drift, not the new reference. `elements`
 * prices the first read of a map never read before (about a microsecond each).
 */
export function seedContentDigest(fd: number, digest: Buffer, elements: number, also = ''): void {
  const m: OpenedMap = { fd, info: readMapInfo(fd) };
  const last = scans.get(m.info.id);
  const costMs = last?.costMs ?? elements / 1000;
  // The time of the last read stands: our writes do not postpone the next comparison with the kernel.
  scans.set(m.info.id, {
    key: scanKey(m, also),
    digest: digest.toString('hex'),
    at: last?.at ?? performance.now(),
    costMs,
  });
}

/** Forgets the digest of one map (we wrote it without knowing the result): read in full next time. */
export function forgetContentScan(mapId: number): void {
  scans.delete(mapId);
}

function withMap<T>(open: () => OpenedMap, use: (m: OpenedMap) => T): T {
  const m = open();
  try {
    return use(m);
  } finally {
    closeFd(m.fd);
  }
}

/** `content <map> id=<id> <digest>` for each of the node's control-plane maps that is pinned. */
export function nodeContentLines(dir: string): string[] {
  return NODE_CONTENT_MAPS.filter((name) => isPinned(mapPinPath(dir, name))).map((name) =>
    withMap(
      () => openMapPin(mapPinPath(dir, name)),
      (m) => `content ${name} id=${m.info.id} ${contentDigest(m)}\n`,
    ),
  );
}

/** The digest of a decision-table trie's contents, by its kernel id ('-' when it is gone). */
export function tableContent(id: number): string {
  try {
    return withMap(
      () => openMapId(id),
      (m) => contentDigest(m),
    );
  } catch {
    return '-';
  }
}

/** The record of the two service maps' digests (hex, in SERVICE_CONTENT_MAPS order). */
function servicesRecordOf(digests: readonly string[]): Buffer {
  const h = createHash('sha256');
  for (const d of digests) h.update(d);
  return h.digest();
}

function servicesDigest(dir: string, cached: boolean, also = ''): Buffer | undefined {
  if (!SERVICE_CONTENT_MAPS.every((n) => isPinned(join(dir, 'maps', n)))) return undefined;
  return servicesRecordOf(
    SERVICE_CONTENT_MAPS.map((name) =>
      withMap(
        () => openMapPin(join(dir, 'maps', name)),
        (m) => (cached ? contentDigest(m, also) : scanMap(m).toString('hex')),
      ),
    ),
  );
}

function recordPin(dir: string): string {
  return join(dir, 'maps', SERVICES_RECORD);
}

/** What the maps hold by the sums of a shadow of them (services, then backends): the record it makes. */
export interface KnownServiceContents {
  /** Content sums (content-sum.ts) of the services and the backends maps. */
  services: Buffer;
  backends: Buffer;
  /** Elements in the two maps, to price their first read. */
  elements: number;
}

/** The record `known` makes, to compare with the one pinned (readServicesRecord). */
export function servicesRecordFor(known: KnownServiceContents): Buffer {
  return servicesRecordOf([known.services.toString('hex'), known.backends.toString('hex')]);
}

/** The digest the last writer of the scope's service maps recorded, if any. */
export function readServicesRecord(dir: string): Buffer | undefined {
  const path = recordPin(dir);
  if (!isPinned(path)) return undefined;
  const map = BpfMap.fromPin(path, codecs.u32, record);
  try {
    // A copy: lookups return a view of scratch memory the walks below reuse.
    const value = map.lookup(0);
    return value && Buffer.from(value);
  } finally {
    map.close();
  }
}

/**
 * Our next fingerprint takes the service maps to hold `known` (recorded by us or by another
 * node's agent), verified against the kernel when they are next due (seedContentDigest).
 */
export function seedServiceContents(
  fds: { services: number; backends: number },
  known: KnownServiceContents,
): void {
  const also = servicesRecordFor(known).toString('hex');
  seedContentDigest(fds.services, known.services, known.elements, also);
  seedContentDigest(fds.backends, known.backends, known.elements, also);
}

/**
 * After writing the scope's service maps: the digest of what is there now, for every node's
 * fingerprint. The maps are shared and each node's agent writes them, possibly at another
 * revision than this one, so a node compares them with what the last writer left (not with its
 * own view): another agent's apply is not drift, a bpftool update is. `known`: the sums of the
 * writer's shadow (no read); without it the maps are read.
 */
export function recordServices(dir: string, known?: KnownServiceContents): void {
  const digest = known ? servicesRecordFor(known) : servicesDigest(dir, false);
  if (!digest) return;
  const path = recordPin(dir);
  if (isPinned(path)) {
    const map = BpfMap.fromPin(path, codecs.u32, record);
    try {
      map.update(0, digest);
    } finally {
      map.close();
    }
    return;
  }
  const map = BpfMap.create({
    type: 'array',
    name: 'sy_svc_digest',
    key: codecs.u32,
    value: record,
    maxEntries: 1,
  });
  try {
    map.update(0, digest);
    pinReplacing(map, path);
  } finally {
    map.close();
  }
}

/** `services contents ok|drifted|unrecorded` for the scope's service maps ([] when there are none). */
export function servicesContentLines(dir: string): string[] {
  const path = recordPin(dir);
  if (!isPinned(path))
    return SERVICE_CONTENT_MAPS.some((n) => isPinned(join(dir, 'maps', n)))
      ? ['services contents unrecorded\n']
      : [];
  const recorded = readServicesRecord(dir);
  const now = servicesDigest(dir, true, recorded?.toString('hex') ?? '');
  if (!now) return ['services contents missing\n'];
  return [`services contents ${recorded && now.equals(recorded) ? 'ok' : 'drifted'}\n`];
}
