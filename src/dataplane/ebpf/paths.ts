/**
 * Where a node's objects are pinned:
 *
 *     /sys/fs/bpf/switchyard/<scope>/<node>/maps/<name>        ct, ipsets, …, meta
 *     /sys/fs/bpf/switchyard/<scope>/<node>/links/tcx-<ifname>-<ingress|egress>
 *     /sys/fs/bpf/switchyard/<scope>/<node>/links/xdp-<ifname>
 *
 * bpffs refuses names with dots, so none of these have one.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { pinScopeDir } from '../../bpf/index.js';

const PLAIN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

function plainName(name: string, prefix: string): string {
  return PLAIN.test(name) ? name : `${prefix}${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
}

export function nodeDir(scope: string, node: string): string {
  return join(pinScopeDir(scope), plainName(node, 'node-'));
}

export type TcxHook = 'ingress' | 'egress';

export function tcxLinkPin(dir: string, ifname: string, hook: TcxHook): string {
  return join(dir, 'links', `tcx-${plainName(ifname, 'if-')}-${hook}`);
}

export function xdpLinkPin(dir: string, ifname: string): string {
  return join(dir, 'links', `xdp-${plainName(ifname, 'if-')}`);
}

export function metaPin(dir: string): string {
  return join(dir, 'maps', 'meta');
}

/**
 * The tcx hook that enforces a policy direction on the host side of a pod's veth: what leaves
 * the pod arrives on tcx ingress (its egress policy); what goes to the pod leaves on tcx egress.
 */
export function hookFor(direction: 'ingress' | 'egress'): TcxHook {
  return direction === 'ingress' ? 'egress' : 'ingress';
}
