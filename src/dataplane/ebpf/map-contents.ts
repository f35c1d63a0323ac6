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
 * the next poll. Our own applies forget every digest (forgetContentScans).
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
  walkMapRaw,
  type OpenedMap,
} from '../../bpf/index.js';
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

function scanMap(m: OpenedMap): Buffer {
  const h = createHash('sha256');
  walkMapRaw(m.fd, m.info, (key, value) => {
    h.update(key);
    h.update(value);
  });
  return h.digest();
}

/** The digest of a map's contents, reused while its element count stands and it is not due. */
function contentDigest(m: OpenedMap, also = ''): string {
  const key = `${m.info.id}:${mapMemlock(m.fd)}:${also}`;
  const now = performance.now();
  const last = scans.get(m.info.id);
  if (last && last.key === key && now - last.at < last.costMs * RESCAN_DUTY) return last.digest;
  const digest = scanMap(m).toString('hex');
  const at = performance.now();
  scans.set(m.info.id, { key, digest, at, costMs: at - now });
  return digest;
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

function servicesDigest(dir: string, cached: boolean, also = ''): Buffer | undefined {
  if (!SERVICE_CONTENT_MAPS.every((n) => isPinned(join(dir, 'maps', n)))) return undefined;
  const h = createHash('sha256');
  for (const name of SERVICE_CONTENT_MAPS)
    withMap(
      () => openMapPin(join(dir, 'maps', name)),
      (m) => h.update(cached ? contentDigest(m, also) : scanMap(m).toString('hex')),
    );
  return h.digest();
}

function recordPin(dir: string): string {
  return join(dir, 'maps', SERVICES_RECORD);
}

/**
 * After writing the scope's service maps: the digest of what is there now, for every node's
 * fingerprint. The maps are shared and each node's agent writes them, possibly at another
 * revision than this one, so a node compares them with what the last writer left (not with its
 * own view): another agent's apply is not drift, a bpftool update is.
 */
export function recordServices(dir: string): void {
  const digest = servicesDigest(dir, false);
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
  const map = BpfMap.fromPin(path, codecs.u32, record);
  let recorded: Buffer | undefined;
  try {
    // A copy: lookups return a view of scratch memory the walks below reuse.
    const value = map.lookup(0);
    recorded = value && Buffer.from(value);
  } finally {
    map.close();
  }
  const now = servicesDigest(dir, true, recorded?.toString('hex') ?? '');
  if (!now) return ['services contents missing\n'];
  return [`services contents ${recorded && now.equals(recorded) ? 'ok' : 'drifted'}\n`];
}
