/**
 * Every kernel name the lab makes. All start with `sy-<lab>-` (namespaces) or live below
 * `switchyard/<lab>` (cgroups, pins, state), so a lab, or what a crashed run left, is found by name.
 */
import { createHash } from 'node:crypto';
import { LabError } from './errors.js';

export const DEFAULT_LAB = 'demo';
/** The lab name `cluster up` creates when no cluster is up and none is named. */
export const DEFAULT_CLUSTER = 'cluster';
export const LAB_NAME_MAX = 20;
const LAB_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** Namespace names are files under /run/netns; keep them readable and well below NAME_MAX. */
const NETNS_NAME_MAX = 100;
const IFNAME_MAX = 15;

/** Host side of every pod veth, as Calico does: the pod's next hop 169.254.1.1 answers from it. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';
export const POD_GATEWAY = '169.254.1.1';
export const POD_INTERFACE = 'eth0';
export const NODE_FABRIC_INTERFACE = 'fabric0';
export const FABRIC_BRIDGE = 'br0';
export const FABRIC_PREFIX_LENGTH = 24;

export const STATE_ROOT = '/run/switchyard/labs';

/** How many members a lab's etcd may have: one, or three (survives the loss of any one). */
export const ETCD_MEMBER_COUNTS = [1, 3] as const;
export type EtcdMemberCount = (typeof ETCD_MEMBER_COUNTS)[number];

export const PIN_ROOT = '/sys/fs/bpf/switchyard';
export const CGROUP_DIR = 'switchyard';
/** Under a lab's cgroup: one cgroup per node's agent (pods' cgroups never take this name). */
export const AGENTS_CGROUP = 'agents';

export function labNameError(name: string): string | undefined {
  if (name.length === 0) return 'lab name must not be empty';
  if (name.length > LAB_NAME_MAX)
    return `lab name '${name}' is too long (at most ${LAB_NAME_MAX} characters)`;
  if (!LAB_NAME.test(name))
    return `invalid lab name '${name}': use lower-case letters, digits and '-', starting and ending with a letter or digit`;
  return undefined;
}

export function checkLabName(name: string): string {
  const e = labNameError(name);
  if (e) throw new LabError(e);
  return name;
}

export function netnsPrefix(lab: string): string {
  return `sy-${lab}-`;
}

export function fabricNetns(lab: string): string {
  return `${netnsPrefix(lab)}fabric`;
}

export function shortHash(text: string, length = 8): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** `<ns>-<pod>`: the part after `sy-<lab>-` in a pod's namespace name and its cgroup directory. */
export function podSlug(namespace: string, name: string): string {
  const slug = `${namespace}-${name}`;
  return slug.length <= NETNS_NAME_MAX - 30
    ? slug
    : `${namespace.slice(0, 20)}-${name.slice(0, 20)}-${shortHash(slug)}`;
}

export function nodeSlug(node: string): string {
  return node.length <= 40 ? node : `${node.slice(0, 30)}-${shortHash(node)}`;
}

/** The fabric namespace's end of a node's link: readable when it fits, hashed otherwise. */
export function fabricPeerName(node: string): string {
  const readable = `f-${node}`;
  return readable.length <= IFNAME_MAX && /^[a-z0-9-]+$/.test(node) ? readable : `h-${shortHash(node, 10)}`;
}

/**
 * Hands out unique slugs. Names already in use keep theirs (a running lab never renames a
 * namespace); a wanted slug that is taken falls back to one with a hash of the owner's key, so
 * `x-a` the pod and `x-a` the node cannot collide.
 */
export class SlugAllocator {
  private readonly taken = new Set<string>();

  constructor(reserved: Iterable<string> = []) {
    for (const r of reserved) this.taken.add(r);
  }

  keep(slug: string): string {
    this.taken.add(slug);
    return slug;
  }

  assign(key: string, wanted: string): string {
    let slug = wanted;
    // `…-fabric` is how cleanup recognises a lab's fabric namespace: no pod or node may look like one.
    for (let i = 0; this.taken.has(slug) || slug.endsWith('-fabric'); i++) {
      slug = `${wanted.slice(0, 60)}-${shortHash(`${key}#${i}`)}`;
    }
    this.taken.add(slug);
    return slug;
  }
}
