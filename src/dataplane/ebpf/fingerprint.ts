/**
 * What a node's eBPF dataplane looks like from the outside: which pins exist, for every pinned
 * link the program it runs and whether it is still attached, and the contents of every map the
 * control plane writes (sets, prefilter, switches, each decision-table trie, the scope's services:
 * map-contents.ts). Equal fingerprints mean nobody detached, replaced, unpinned or rewrote anything
 * in between. Maps the programs write (conntrack, counters, flows, affinity) change with every
 * packet and are not part of it. Decision tables count by identity too: the kernel id of the trie
 * each table-mode hook's index points at (a rule change installs a new trie).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { isPinned, Link, MapOfMaps, codecs, type LinkInfo } from '../../bpf/index.js';
import { inconsistentFingerprint, type NodeTarget } from '../backend.js';
import { MAP } from './layout.js';
import { mapPinPath } from './maps.js';
import { nodeContentLines, servicesContentLines, tableContent } from './map-contents.js';
import { readMeta, writeMeta } from './meta.js';
import { nodeDir } from './paths.js';
import { dropPinnedLink } from './pinned-link.js';
import { servicesDir } from './services.js';

function pinnedLinks(dir: string): string[] {
  const links = join(dir, 'links');
  return existsSync(links) ? readdirSync(links).map((n) => join(links, n)) : [];
}

function pinnedMaps(dir: string): string[] {
  const maps = join(dir, 'maps');
  return existsSync(maps) ? readdirSync(maps).map((n) => join(maps, n)) : [];
}

function linkInfo(path: string): LinkInfo | undefined {
  try {
    const link = Link.fromPin(path);
    try {
      return link.info();
    } finally {
      link.close();
    }
  } catch {
    return undefined;
  }
}

/** A link whose interface or cgroup went away, or that someone detached, still has its pin. */
function attached(info: LinkInfo | undefined): boolean {
  if (!info) return false;
  if (info.ifindex !== undefined) return info.ifindex !== 0;
  if (info.cgroupId !== undefined) return info.cgroupId !== 0n;
  return true;
}

function dirs(target: NodeTarget): string[] {
  return [nodeDir(target.scope, target.node), servicesDir(target.scope)];
}

/**
 * The scope's service programs are shared by every node of the scope and each node's agent
 * re-applies them, so another node's agent may swap their programs for identical ones: for those
 * links only presence and attachment count.
 */
export function ebpfFingerprint(target: NodeTarget): string {
  const h = createHash('sha256');
  const [own, shared] = dirs(target);
  const detached: string[] = [];
  for (const dir of [own, shared]) {
    if (!dir) continue;
    for (const path of pinnedMaps(dir).sort()) h.update(`map ${path}\n`);
    for (const path of pinnedLinks(dir).sort()) {
      const info = linkInfo(path);
      const program = dir === own ? (info?.programId ?? '-') : 'shared';
      h.update(`link ${path} program=${program} attached=${attached(info)}\n`);
      if (dir === own && !attached(info)) detached.push(basename(path));
    }
  }
  if (own) for (const line of [...tableIdentities(own), ...nodeContentLines(own)]) h.update(line);
  if (shared) for (const line of servicesContentLines(shared)) h.update(line);
  const digest = h.digest('hex');
  // Our apply leaves every link of the node attached: a pinned one that is not was detached (or
  // lost its interface) behind the agent, even when this is the read right after an apply.
  return detached.length > 0
    ? inconsistentFingerprint(
        `detached ${detached.slice(0, 3).join(', ')}${detached.length > 3 ? ', …' : ''}`,
        digest,
      )
    : digest;
}

/** `table <index> trie=<id>` for every table index the node's description allocates. */
function tableIdentities(dir: string): string[] {
  const path = mapPinPath(dir, MAP.tables);
  let indices: number[];
  try {
    indices = Object.values(readMeta(dir)?.alloc.tables ?? {}).sort((a, b) => a - b);
  } catch {
    return ['meta unreadable\n'];
  }
  if (indices.length === 0 || !isPinned(path)) return [];
  const tables = MapOfMaps.fromPin(path, codecs.u32);
  try {
    return indices.map((i) => {
      const id = tables.innerId(i);
      return `table ${i} trie=${id ?? '-'} ${id === undefined ? '' : tableContent(id)}\n`;
    });
  } finally {
    tables.close();
  }
}

/**
 * Before a repair: drops pinned links that no longer hold their hook, so the next apply attaches
 * fresh ones instead of updating a link that goes nowhere; and forgets which decision tables are
 * installed, so the apply builds every table anew (a trie someone wrote to has the id and hash the
 * description records, and would be kept as it is).
 */
export function prepareEbpfRepair(target: NodeTarget): string[] {
  const dropped = dropDetachedLinks(target);
  const dir = nodeDir(target.scope, target.node);
  const meta = isPinned(join(dir, 'maps')) ? readMetaOrNothing(dir) : undefined;
  if (meta && (meta.tables?.length || meta.prefilter)) {
    // The prefilter's lists are synced again (the trie read back) when their hash differs.
    writeMeta(dir, {
      ...meta,
      tables: [],
      ...(meta.prefilter ? { prefilter: { ...meta.prefilter, hash: '' } } : {}),
    });
    dropped.push(...(meta.tables ?? []).map((t) => `table:${t.endpoint}:${t.direction}`));
  }
  return dropped;
}

function readMetaOrNothing(dir: string): ReturnType<typeof readMeta> {
  try {
    return readMeta(dir);
  } catch {
    return undefined;
  }
}

function dropDetachedLinks(target: NodeTarget): string[] {
  const dropped: string[] = [];
  for (const dir of dirs(target)) {
    for (const path of pinnedLinks(dir)) {
      if (attached(linkInfo(path))) continue;
      dropPinnedLink(path);
      dropped.push(path);
    }
  }
  return dropped;
}
