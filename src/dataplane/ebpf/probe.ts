/**
 * A cheap read of one part of a node's eBPF dataplane (Backend.probe): what waits for a change to
 * be in force polls it, every millisecond if it likes, without reading the whole node back.
 *
 *   an endpoint: the program ids on its two tcx links (a rule change of a walk-mode endpoint
 *     loads new programs and swaps them in with one BPF_LINK_UPDATE each: the id read is the
 *     program in force); table-mode endpoints also get the inner map id of their decision
 *     tables' slots (found once in the node's description), which a rule change replaces
 *     without a reload;
 *   a service port: its entry and backend slots in the scope's service maps, as connect() reads
 *     them.
 *
 * The pins are opened once (a map or link replaced by a later apply is opened again), so a read
 * is two BPF_OBJ_GET_INFO_BY_FD or a few map lookups.
 */
import { BpfMap, isPinned, Link, MapOfMaps, codecs } from '../../bpf/index.js';
import type { InForceProbe, NodeTarget, ProbedPart } from '../backend.js';
import type { Endpoint } from '../../ir/types.js';
import { IPPROTO, MAP } from './layout.js';
import { mapPinPath } from './maps.js';
import { hookFor, nodeDir, tcxLinkPin } from './paths.js';
import { readMeta } from './meta.js';
import { hookKey } from './node.js';
import { servicesDir } from './services.js';
import { backendKey, backendValue, SVC_MAP, svcKey, svcValue } from './services-layout.js';
import { join } from 'node:path';

export function ebpfProbe(target: NodeTarget, part: ProbedPart): InForceProbe {
  return 'endpoint' in part ? endpointProbe(target, part.endpoint) : serviceProbe(target.scope, part.service);
}

/** Reads a pinned object, opening the pin again when the read fails (the pin was replaced). */
class PinnedReader<T extends { close(): void }> {
  private held: T | undefined;

  constructor(
    private readonly path: string,
    private readonly open: (path: string) => T,
  ) {}

  read<R>(what: (object: T) => R): R | undefined {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        if (!this.held) {
          if (!isPinned(this.path)) return undefined;
          this.held = this.open(this.path);
        }
        return what(this.held);
      } catch {
        this.close();
      }
    }
    return undefined;
  }

  close(): void {
    this.held?.close();
    this.held = undefined;
  }
}

function endpointProbe(target: NodeTarget, endpoint: Endpoint): InForceProbe {
  const dir = nodeDir(target.scope, target.node);
  const links = (['ingress', 'egress'] as const).map(
    (direction) =>
      new PinnedReader(tcxLinkPin(dir, endpoint.hostInterface, hookFor(direction)), (p) => Link.fromPin(p)),
  );
  const tables = new PinnedReader(mapPinPath(dir, MAP.tables), (p) => MapOfMaps.fromPin(p, codecs.u32));
  // The endpoint's table indices, from the node's description once (a rule change keeps them);
  // the tables map is an array of 4096 slots, too many to walk every millisecond.
  const alloc = readMeta(dir)?.alloc.tables ?? {};
  const indices = (['ingress', 'egress'] as const)
    .map((direction) => alloc[hookKey(endpoint.id, direction)])
    .filter((i): i is number => i !== undefined);
  return {
    read: () => {
      const programs = links.map((l) => l.read((link) => link.info().programId) ?? 0).join(',');
      const inner = tables.read((m) => indices.map((i) => m.innerId(i) ?? 0).join(',')) ?? '';
      return `${programs};${inner}`;
    },
    close: () => {
      for (const l of links) l.close();
      tables.close();
    },
  };
}

function serviceProbe(
  scope: string,
  service: Extract<ProbedPart, { service: unknown }>['service'],
): InForceProbe {
  const dir = servicesDir(scope);
  const services = new PinnedReader(join(dir, 'maps', SVC_MAP.services), (p) =>
    BpfMap.fromPin(p, svcKey, svcValue),
  );
  const backends = new PinnedReader(join(dir, 'maps', SVC_MAP.backends), (p) =>
    BpfMap.fromPin(p, backendKey, backendValue),
  );
  const key = { vip: service.address, port: service.port, proto: IPPROTO[service.protocol], node: 0 };
  return {
    read: () => {
      const entry = services.read((m) => m.lookup(key));
      if (!entry) return 'none';
      const slots = backends.read((m) =>
        Array.from({ length: entry.count }, (_, slot) => {
          const b = m.lookup({ id: entry.id, slot });
          return b ? `${b.addr}:${b.port}` : '-';
        }),
      );
      return `${entry.id}/${entry.count}:${(slots ?? []).join(',')}`;
    },
    close: () => {
      services.close();
      backends.close();
    },
  };
}
