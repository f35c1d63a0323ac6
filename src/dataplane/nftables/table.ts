/**
 * One endpoint's decision table (IR `RuleSet.table`) → nft objects that decide a packet in a fixed
 * number of steps, whatever the number of rules:
 *
 *   <entry chain>   ip saddr vmap @…-peers-v4        remote address → its class (interval map)
 *                   ip6 saddr vmap @…-peers-v6
 *                   goto <class 0>                    an address under no prefix
 *   …-class-<h>     meta l4proto . th dport vmap @…-ports-<h>   (protocol, port range) → outcome
 *                   meta l4proto { icmp, ipv6-icmp } goto …-out-<icmp>
 *                   goto …-out-<other>               any other protocol, and what the map left out
 *   …-out-<h>       the Log rules' counters (and flow records), the Pass rule's counter, then the
 *                   deciding rule's counter (and flow record) and its verdict: `return` allows,
 *                   `drop` denies (decision.ts)
 *
 * Two lookups rather than one map keyed `address . protocol . port`: that map would need every
 * prefix times its class's port entries, which multiplies where this adds. No packet mark carries
 * the class between them (the mark belongs to whoever else uses it); the class's own chain does.
 *
 * `th dport` loads bytes 2–3 of the transport header whatever the protocol (for ICMP, the
 * checksum), so the ports map holds TCP, UDP and SCTP keys only and ICMP and the rest are decided
 * by protocol after it. A port entry deciding like the class's `other` entry is left out of the
 * map: the miss falls through to the same outcome. A class deciding everything alike needs no
 * chain or map at all: its prefixes point at the outcome directly.
 */
import { createHash } from 'node:crypto';
import {
  PORT_PROTOCOLS,
  type DecisionTable,
  type PeerClass,
  type TableEntry,
} from '../../ir/decision-table.js';
import type { Endpoint } from '../../ir/types.js';
import type { Decisions } from './decision.js';
import {
  classChain,
  classPortsMap,
  outcomeChain,
  peersMap,
  quoted,
  tableMarker,
  tierChain,
  type Family,
} from './names.js';
import type { NftChain, NftSet } from './objects.js';

const L4 = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' } as const;
const ADDR_TYPE: Record<Family, string> = { v4: 'ipv4_addr', v6: 'ipv6_addr' };
const ADDR_MATCH: Record<Family, string> = { v4: 'ip', v6: 'ip6' };

function digest(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 12);
}

export interface TableObjects {
  /** Entry chain first (the dispatch maps jump to it), then classes, then outcomes. */
  chains: NftChain[];
  maps: NftSet[];
}

/** Builds the objects of one table; identical classes and outcomes become one object each. */
class TableRenderer {
  private readonly outcomes = new Map<string, NftChain>();
  private readonly classes = new Map<string, NftChain>();
  private readonly maps = new Map<string, NftSet>();

  constructor(
    private readonly table: DecisionTable,
    private readonly ep: Endpoint,
    private readonly decisions: Decisions,
  ) {}

  /** The chain that counts, logs and decides like `entry`. */
  private outcome(entry: TableEntry): string {
    const { verdict, rule, logged, passedBy } = entry;
    const name = outcomeChain(
      this.table.direction,
      this.ep.hostInterface,
      digest([verdict, rule, logged, passedBy ?? null]),
    );
    if (this.outcomes.has(name)) return name;
    const rules = [
      ...logged.flatMap((id) => this.decisions.log('', id)),
      // The walk counts a Pass rule when it hands the packet to the Kubernetes tier.
      ...(passedBy !== undefined ? [`counter comment ${quoted(passedBy)}`] : []),
      ...this.decisions.decide('', verdict, rule),
    ];
    this.outcomes.set(name, {
      name,
      spec: '',
      base: false,
      rules,
      note: `${this.ep.id} ${this.table.direction}: ${verdict} by ${rule}${logged.length ? `, logged by ${logged.join(', ')}` : ''}${passedBy !== undefined ? `, passed by ${passedBy}` : ''}`,
    });
    return name;
  }

  /** Where a class's prefixes lead: its chain, or the outcome itself when everything decides alike. */
  private classTarget(cls: PeerClass): string {
    const other = this.outcome(cls.other);
    const icmp = this.outcome(cls.icmp);
    const elements = PORT_PROTOCOLS.flatMap((p) =>
      cls.ports[p].flatMap((e) => {
        const target = this.outcome(e);
        if (target === other) return [];
        const ports = e.first === e.last ? `${e.first}` : `${e.first}-${e.last}`;
        return [`${L4[p]} . ${ports} : goto ${target}`];
      }),
    );
    if (elements.length === 0 && icmp === other) return other;
    const key = digest([elements, icmp, other]);
    const name = classChain(this.table.direction, this.ep.hostInterface, key);
    if (this.classes.has(name)) return name;
    const rules: string[] = [];
    if (elements.length > 0) {
      const map = classPortsMap(this.table.direction, this.ep.hostInterface, key);
      this.maps.set(map, {
        kind: 'map',
        name: map,
        spec: '{ type inet_proto . inet_service : verdict; flags interval; }',
        elements,
        note: `${this.ep.id} ${this.table.direction}: class ${cls.id}, (protocol . port) → outcome`,
      });
      rules.push(`meta l4proto . th dport vmap @${map}`);
    }
    if (icmp !== other) rules.push(`meta l4proto { icmp, ipv6-icmp } goto ${icmp}`);
    rules.push(`goto ${other}`);
    this.classes.set(name, {
      name,
      spec: '',
      base: false,
      rules,
      note: `${this.ep.id} ${this.table.direction}: class ${cls.id}`,
    });
    return name;
  }

  render(): TableObjects {
    const { direction } = this.table;
    const targets = this.table.classes.map((c) => this.classTarget(c));
    const remote = direction === 'egress' ? 'daddr' : 'saddr';
    const entry: string[] = [];
    const peerMaps: NftSet[] = [];
    for (const family of ['v4', 'v6'] as const) {
      const prefixes = this.table.prefixes.filter((p) => (p.cidr.includes(':') ? 'v6' : 'v4') === family);
      if (prefixes.length === 0) continue;
      const name = peersMap(direction, this.ep.hostInterface, family);
      peerMaps.push({
        kind: 'map',
        name,
        spec: `{ type ${ADDR_TYPE[family]} : verdict; flags interval; }`,
        elements: prefixes.map((p) => `${p.cidr} : goto ${targets[p.classId] as string}`),
        note: `${this.ep.id} ${direction}: ${remote === 'saddr' ? 'source' : 'destination'} → class`,
      });
      entry.push(`${ADDR_MATCH[family]} ${remote} vmap @${name}`);
    }
    entry.push(`goto ${targets[0] as string} comment ${quoted(tableMarker(this.ep.id, direction))}`);
    return {
      chains: [
        {
          name: tierChain(direction, this.ep.hostInterface),
          spec: '',
          base: false,
          rules: entry,
          note: `${this.ep.id} ${direction}: decision table, classes: ${this.table.classes.length}, prefixes: ${this.table.prefixes.length}`,
        },
        ...this.classes.values(),
        ...this.outcomes.values(),
      ],
      maps: [...peerMaps, ...this.maps.values()],
    };
  }
}

/** The table's chains and maps for endpoint `ep` (the table's endpoint). */
export function tableObjects(table: DecisionTable, ep: Endpoint, decisions: Decisions): TableObjects {
  return new TableRenderer(table, ep, decisions).render();
}
