/**
 * What the backend keeps of a node's node-port load balancer between applies (the node's
 * NodeMemory holds it; dropShadow and a failed apply forget it): the IR arrays it was applied
 * from, the maps' ids, the shadow of np_svc / np_backends (the same ServicesShadow the
 * connect-time maps use, since the layouts are the same) and the links it left. An apply whose
 * service tables and nodes are the arrays the shadow was made from, on the same fabric, does
 * nothing at all; otherwise the maps are changed by difference from the shadow, without reading
 * them back, and the links are only looked at when the programs or the fabric changed.
 */
import type { IR } from '../../ir/types.js';
import type { NetnsInterface } from './iface.js';
import { nodePortProgram, type NodePortAddresses, type NodePortHook } from './nodeport-programs.js';
import { programHash } from './program.js';
import type { ServicesShadow } from './services-shadow.js';

export interface NodePortShadow {
  /** The IR's arrays the node ports were last applied from (identity: unchanged IR parts). */
  services: IR['services'];
  nodes: IR['nodes'];
  /** fabricKey of the interfaces the links were put on. */
  fabric: string;
  /** Map ids (np_svc, np_backends, np_nat, np_affinity) and the links' programs; absent: removed. */
  installed?: { mapIds: string; hashes: Record<NodePortHook, string>; maps: ServicesShadow };
}

export function fabricKey(fabric: readonly NetnsInterface[]): string {
  return fabric.map((i) => `${i.ifname}#${i.ifindex}`).join(',');
}

export interface NodePortCode {
  codes: Record<NodePortHook, ReturnType<typeof nodePortProgram>>;
  hashes: Record<NodePortHook, string>;
}

/** The programs depend only on the node's addresses: generated and hashed once per address pair. */
const generated = new Map<string, NodePortCode>();
const KEPT_PROGRAMS = 64;

export function nodePortCode(addresses: NodePortAddresses): NodePortCode {
  const key = `${addresses.own}/${addresses.snat}`;
  let code = generated.get(key);
  if (!code) {
    const codes = {
      ingress: nodePortProgram('ingress', addresses),
      egress: nodePortProgram('egress', addresses),
    };
    code = {
      codes,
      hashes: {
        ingress: programHash(codes.ingress).slice(0, 12),
        egress: programHash(codes.egress).slice(0, 12),
      },
    };
    if (generated.size >= KEPT_PROGRAMS) generated.clear();
    generated.set(key, code);
  }
  return code;
}
