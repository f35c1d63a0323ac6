/**
 * What `explain` needs to follow a service: the destination forms it accepts (`svc/NS/NAME:PORT`,
 * `VIP:PORT`, a pod or an address) and, for a service, the port table it translates with and the
 * pods its selector picks that are no backend of that port. Policy is not evaluated here.
 */
import type { IR, Protocol, ServicePortTable } from '../ir/types.js';
import type { Model, Service } from '../model/types.js';
import { parseAddress } from '../util/ip.js';

export interface Destination {
  /** A pod `ns/name` or an address, without the port. */
  target: string;
  port?: number;
  /** `ns/name` when given as `svc/NS/NAME[:PORT]`. */
  service?: string;
}

const SERVICE = /^svc\/([^/\s:]+)\/([^/\s:]+)(?::(\d{1,5}))?$/;
const IPV4_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/;
/** An IPv6 address with a port is bracketed (RFC 3986): `[fd00:5957::2]:5432`. */
const IPV6_PORT = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/;

function port(text: string | undefined, given: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (n < 1 || n > 65535) throw new Error(`'${given}': the port must be 1-65535`);
  return n;
}

/** `svc/NS/NAME[:PORT]`, `A.B.C.D:PORT`, `[IPV6]:PORT`, or a pod or address as given. */
export function parseDestination(to: string): Destination {
  const svc = SERVICE.exec(to);
  if (svc) {
    const p = port(svc[3], to);
    return { target: to, service: `${svc[1]}/${svc[2]}`, ...(p !== undefined ? { port: p } : {}) };
  }
  const hostPort = IPV4_PORT.exec(to);
  if (hostPort && parseAddress(hostPort[1] as string))
    return { target: hostPort[1] as string, port: port(hostPort[2], to) as number };
  const v6 = IPV6_PORT.exec(to);
  if (v6 && parseAddress(v6[1] as string)?.family === 6) {
    const p = port(v6[2], to);
    return { target: v6[1] as string, ...(p !== undefined ? { port: p } : {}) };
  }
  return { target: to };
}

/** A service destination, resolved as far as the service allows. */
export interface ServiceTarget {
  service: Service;
  address: string;
  /** The table of the asked port and protocol; absent when the service does not define it. */
  table?: ServicePortTable;
  /** Every port the service defines: `80/TCP (http)`. */
  ports: string[];
  /** Pods the selector picks that are no backend of the asked port, and why. */
  skipped: { pod: string; reason: string }[];
}

function portText(p: { port: number; protocol: string; name?: string }): string {
  return `${p.port}/${p.protocol}${p.name ? ` (${p.name})` : ''}`;
}

/** Why pods the selector picks are missing from the port's backends. */
function skippedPods(
  ir: IR,
  service: Service,
  table: ServicePortTable | undefined,
): { pod: string; reason: string }[] {
  if (!table || !service.selector) return [];
  const selector = service.selector;
  const spec = service.ports.find((p) => p.port === table.port && p.protocol === table.protocol);
  const backends = new Set(table.backends.map((b) => b.endpoint));
  return ir.endpoints
    .filter(
      (e) =>
        e.namespace === service.namespace &&
        !backends.has(e.id) &&
        Object.entries(selector).every(([k, v]) => e.labels[k] === v),
    )
    .map((e) => {
      const named = typeof spec?.targetPort === 'string';
      const serves =
        named && e.ports.some((cp) => cp.name === spec?.targetPort && cp.protocol === table.protocol);
      return {
        pod: e.id,
        reason:
          named && !serves
            ? `no container port named '${String(spec?.targetPort)}' (${table.protocol})`
            : 'not ready',
      };
    });
}

/**
 * The service a destination names (`svc/NS/NAME`) or whose cluster IP it is; undefined for
 * anything else. Throws when a named service does not exist.
 */
export function findServiceTarget(
  model: Model,
  ir: IR,
  dest: Destination,
  protocol: Protocol,
  port: number | undefined,
  family?: 4 | 6,
): ServiceTarget | undefined {
  let tables: ServicePortTable[];
  let name: string;
  if (dest.service) {
    name = dest.service;
    const all = ir.services.filter((t) => t.service === name);
    // A service by name stands for its cluster IP of the family asked (IPv4 unless asked).
    tables = all.filter((t) => (t.family ?? 4) === (family ?? 4));
    if (family === 6 && tables.length === 0 && all.length > 0)
      throw new Error(`service ${name} has no IPv6 cluster IP (it is IPv4 only: ipFamilies)`);
  } else {
    tables = ir.services.filter((t) => t.address === dest.target);
    const first = tables[0];
    if (!first) return undefined;
    name = first.service;
  }
  const service = model.services.find((s) => `${s.namespace}/${s.name}` === name);
  if (!service) {
    const known = model.services.map((s) => `${s.namespace}/${s.name}`);
    throw new Error(`there is no service '${name}' (services: ${known.slice(0, 20).join(', ') || 'none'})`);
  }
  const address = tables[0]?.address ?? service.clusterIP ?? '';
  const table = tables.find((t) => t.port === port && t.protocol === protocol);
  return {
    service,
    address,
    ...(table ? { table } : {}),
    ports: service.ports.map(portText),
    skipped: skippedPods(ir, service, table),
  };
}
