/**
 * Applying the fabric interface's XDP program (nodeport-xdp-program.ts: the prefilter, then the
 * node-port load balancer's forward path) on every fabric interface of a node.
 *
 * It runs after the node-port step (nodeport.ts) has brought np_svc / np_backends to the IR and
 * put the tcx programs in force, so the XDP code always finds the maps it was loaded against
 * filled, and the tcx programs behind it can finish anything XDP passes on. The program is loaded
 * first (a verifier rejection leaves the XDP program in force as it was, and the tcx load
 * balancer, complete on its own, carries the traffic), then swapped on each pinned link
 * (BPF_LINK_UPDATE: no gap), or attached anew.
 *
 * Pins (the prefilter's, so removeNode, the fingerprint and repair see them as before):
 *
 *     <node dir>/links/xdp-<ifname>
 *
 * The node's description records the code-and-maps hash and the interfaces (`xdp`), so an apply
 * that changes neither reloads nothing.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  attachXdp,
  BpfMap,
  isPinned,
  Link,
  Program,
  VerifierError,
  withNetns,
  type MapBase,
} from '../../bpf/index.js';
import type { IR } from '../../ir/types.js';
import type { NetnsInterface } from './iface.js';
import { mapPinPath } from './maps.js';
import { isIpv4 } from './node.js';
import {
  NP_MAP,
  natKey,
  natValue,
  npAffinityKey,
  npAffinityValue,
  npBackendValue,
  npSvcKey,
} from './nodeport-layout.js';
import type { NodePortAddresses } from './nodeport-programs.js';
import { fabricXdpProgram, fabricXdpProgramName, type FabricXdpParts } from './nodeport-xdp-program.js';
import { xdpLinkPin } from './paths.js';
import { dropPinnedLink } from './pinned-link.js';
import { programHash } from './program.js';
import { backendKey, svcValue } from './services-layout.js';

/** Off: the node-port load balancer stays at tcx only (the XDP program is the prefilter alone). */
export const NODEPORT_XDP_ENV = 'SWITCHYARD_EBPF_NODEPORT_XDP';

/** The load balancer at XDP unless the environment turns it off (`=0`, for comparing). */
export function nodePortXdpFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[NODEPORT_XDP_ENV] !== '0' && env[NODEPORT_XDP_ENV] !== 'off';
}

/** What the node's description keeps of its fabric XDP program. */
export interface FabricXdpState {
  /** Code and the maps it was loaded against (a new map id means a reload). */
  hash: string;
  /** Whether the node-port load balancer is part of the program. */
  nodePorts: boolean;
  interfaces: { ifname: string; ifindex: number }[];
}

export interface FabricXdpTarget {
  netns: string;
  dir: string;
  /** The interfaces traffic from outside enters by. */
  fabric: readonly NetnsInterface[];
  /** The node's maps by program name (the prefilter's trie and counters among them). */
  nodeMaps: Record<string, MapBase>;
  /** The node's maps were recreated: every program must be loaded against them again. */
  mapsChanged: boolean;
  verifierLog?: boolean;
}

/** A rejection of the fabric XDP program, with the verifier's reason. */
export class FabricXdpLoadError extends Error {}

/**
 * The addresses the node-port code is generated with, as nodeport-sync.ts derives them: refused
 * connections go to the external address (else the fabric address), remote backends see the
 * fabric address.
 */
export function nodePortAddressesOf(ir: IR, node: string): NodePortAddresses | undefined {
  const self = ir.nodes.find((n) => n.name === node);
  if (!self || !isIpv4(self.address)) return undefined;
  const external = self.externalAddress && isIpv4(self.externalAddress) ? self.externalAddress : undefined;
  return { own: external ?? self.address, snat: self.address };
}

/** The node-port maps nodeport.ts pinned, or undefined when the node has none. */
function openNodePortMaps(dir: string): Record<string, MapBase> | undefined {
  const specs = [
    [NP_MAP.services, npSvcKey, svcValue],
    [NP_MAP.backends, backendKey, npBackendValue],
    [NP_MAP.nat, natKey, natValue],
    [NP_MAP.affinity, npAffinityKey, npAffinityValue],
  ] as const;
  if (!specs.every(([name]) => isPinned(mapPinPath(dir, name)))) return undefined;
  const out: Record<string, MapBase> = {};
  try {
    for (const [name, key, value] of specs)
      out[name] = BpfMap.fromPin(mapPinPath(dir, name), key as typeof npSvcKey, value as typeof svcValue);
    return out;
  } catch (e) {
    for (const m of Object.values(out)) m.close();
    throw e;
  }
}

function stateHash(code: ReturnType<typeof fabricXdpProgram>, maps: Record<string, MapBase>): string {
  const ids = Object.entries(maps)
    .map(([name, m]) => `${name}=${m.info.id}`)
    .sort()
    .join(',');
  return createHash('sha256')
    .update(`${programHash(code)} ${ids}`)
    .digest('hex')
    .slice(0, 16);
}

function load(
  name: string,
  code: ReturnType<typeof fabricXdpProgram>,
  maps: Record<string, MapBase>,
  fullLog: boolean,
): Program {
  try {
    return Program.load({
      name,
      type: 'xdp',
      expectedAttachType: 'xdp',
      instructions: code,
      maps,
      ...(fullLog ? { fullLog: true } : {}),
    });
  } catch (e) {
    const reason = e instanceof VerifierError ? (fullLog ? e.withLog() : e.message) : String(e);
    throw new FabricXdpLoadError(`the fabric XDP program (${name}) was not loaded: ${reason}`, { cause: e });
  }
}

/** Swaps the program on the pinned link while it still holds its interface, else attaches anew. */
function swap(target: FabricXdpTarget, iface: NetnsInterface, program: Program, kept: boolean): void {
  const path = xdpLinkPin(target.dir, iface.ifname);
  if (kept && isPinned(path)) {
    const link = Link.fromPin(path);
    try {
      if (link.info().ifindex === iface.ifindex) {
        link.update(program);
        return;
      }
    } catch {
      // the link went with its interface: attach anew below
    } finally {
      link.close();
    }
  }
  dropPinnedLink(path);
  mkdirSync(dirname(path), { recursive: true });
  const link = withNetns(target.netns, () => attachXdp(program, { ifname: iface.ifname }));
  try {
    link.pin(path);
  } finally {
    link.close();
  }
}

/**
 * Brings the fabric's XDP program to `parts` (nothing at all when the node has neither prefilter
 * lists nor node ports at XDP); returns its state for the node's description and what changed.
 */
export function applyFabricXdp(
  target: FabricXdpTarget,
  parts: FabricXdpParts,
  before: FabricXdpState | undefined,
): { state: FabricXdpState | undefined; changed: string[] } {
  const changed: string[] = [];
  const npMaps = parts.nodePorts ? openNodePortMaps(target.dir) : undefined;
  const want: FabricXdpParts = {
    prefilter: parts.prefilter,
    ...(npMaps ? { nodePorts: parts.nodePorts } : {}),
  };
  const fabric = want.prefilter || want.nodePorts ? target.fabric : [];
  const same = (a: { ifname: string; ifindex: number }, b: { ifname: string; ifindex: number }): boolean =>
    a.ifname === b.ifname && a.ifindex === b.ifindex;
  let program: Program | undefined;
  try {
    // Links on interfaces that are no longer (or not the same) fabric interfaces go first.
    for (const old of before?.interfaces ?? [])
      if (!fabric.some((f) => same(f, old))) {
        dropPinnedLink(xdpLinkPin(target.dir, old.ifname));
        changed.push(`xdp:${old.ifname}`);
      }
    if (fabric.length === 0) return { state: undefined, changed };
    const maps = { ...target.nodeMaps, ...npMaps };
    const code = fabricXdpProgram(want);
    const hash = stateHash(code, maps);
    const attached: NetnsInterface[] = [];
    for (const iface of fabric) {
      const kept = before?.interfaces.some((b) => same(b, iface)) ?? false;
      const path = xdpLinkPin(target.dir, iface.ifname);
      attached.push(iface);
      if (kept && isPinned(path) && before?.hash === hash && !target.mapsChanged) continue;
      program ??= load(fabricXdpProgramName(want), code, maps, target.verifierLog ?? false);
      try {
        swap(target, iface, program, kept);
      } catch (e) {
        // Node ports alone: an interface without XDP leaves them to tcx, which does it all. The
        // prefilter has no such fallback at XDP: its failure is the apply's.
        if (want.prefilter) throw e;
        attached.pop();
        changed.push(`xdp-unavailable:${iface.ifname}`);
        continue;
      }
      changed.push(`xdp:${iface.ifname}`);
    }
    return {
      state: {
        hash,
        nodePorts: want.nodePorts !== undefined,
        interfaces: attached.map((f) => ({ ifname: f.ifname, ifindex: f.ifindex })),
      },
      changed,
    };
  } finally {
    program?.close();
    for (const m of Object.values(npMaps ?? {})) m.close();
  }
}
