/**
 * A small interpreter of the rules the iptables backend renders (filter table, one endpoint
 * chain), to check rendering without a kernel: what a new connection's first packet gets, which
 * rule comments count it, which flow sets count it, and how many rules it took. Knows only the
 * matches and targets the backend writes; anything else throws, so a new construct cannot pass
 * unnoticed. Flow sets start without the packet's element (it is the first of its kind) and
 * take it when a rule adds it, unless `flowSetsFull`.
 */
import type { NodePlan, SetSpec } from '../../src/dataplane/iptables/plan.js';
import { parseAddress, parseCidr } from '../../src/util/ip.js';

export interface Packet {
  remote: string;
  /** The endpoint's own address does not matter to its chains: only the remote's. */
  direction: 'ingress' | 'egress';
  /** GRE stands for any protocol the table calls `other`. */
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'ICMP' | 'GRE';
  dport?: number;
}

export interface Outcome {
  verdict: 'allow' | 'deny';
  /** Comments of the rules that matched, in order (what counters add up). */
  counted: string[];
  /** Flow sets that counted the packet (a counting match or an add), in order. */
  aggregated: string[];
  /** SY-FLOWFULL chains the packet went through (its flow set was full). */
  notAggregated: string[];
  /** Rules evaluated. */
  steps: number;
  /** ipset lookups made (the dear part of a rule: a hash probe per prefix length in the set). */
  lookups: number;
}

function tokens(args: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(args); m; m = re.exec(args)) out.push(m[1] ?? (m[2] as string));
  return out;
}

function inCidr(address: string, cidr: string): boolean {
  const a = parseAddress(address);
  const c = parseCidr(cidr);
  if (!a || !c || a.family !== c.family) return false;
  const bits = BigInt((c.family === 4 ? 32 : 128) - c.prefix);
  return a.value >> bits === c.base >> bits;
}

function inSet(set: SetSpec, p: Packet, flags: string): boolean {
  if (set.type === 'hash:net') return set.members.some((m) => inCidr(p.remote, m));
  if (flags !== 'dst,dst') throw new Error(`hash:ip,port matched with ${flags}`);
  const a = parseAddress(p.remote);
  return set.members.some((m) => {
    const [addr, pp] = m.split(',') as [string, string];
    const b = parseAddress(addr);
    return (
      !!a &&
      !!b &&
      a.family === b.family &&
      a.value === b.value &&
      pp === `${p.protocol.toLowerCase()}:${p.dport}`
    );
  });
}

function portIn(spec: string, port: number | undefined): boolean {
  if (port === undefined) return false;
  return spec.split(',').some((r) => {
    const [a, b] = r.split(':').map(Number) as [number, number | undefined];
    return port >= a && port <= (b ?? a);
  });
}

const PROTO_NAMES: Record<string, Packet['protocol'][]> = {
  tcp: ['TCP'],
  udp: ['UDP'],
  sctp: ['SCTP'],
  icmp: ['ICMP'],
  'ipv6-icmp': ['ICMP'],
};

/** Runs `start` (entered with -g from SY-FROM-WL / SY-TO-WL) for a packet of a new connection. */
export function runChain(
  plan: NodePlan,
  family: 4 | 6,
  start: string,
  p: Packet,
  opts: { flowSetsFull?: boolean } = {},
): Outcome {
  const table = plan.tables.find((t) => t.family === family && t.table === 'filter');
  if (!table) throw new Error(`no IPv${family} filter table`);
  const chains = new Map(table.chains.map((c) => [c.name, c.rules]));
  const sets = new Map(plan.sets.map((s) => [s.name, s]));
  let mark = 0;
  const counted: string[] = [];
  const aggregated: string[] = [];
  const notAggregated: string[] = [];
  /** Flow sets holding this packet's element. */
  const holding = new Set<string>();
  let steps = 0;
  let lookups = 0;
  const stack: { chain: string; i: number }[] = [{ chain: start, i: 0 }];
  const done = (verdict: 'allow' | 'deny'): Outcome => ({
    verdict,
    counted,
    aggregated,
    notAggregated,
    steps,
    lookups,
  });
  while (stack.length > 0) {
    const frame = stack[stack.length - 1] as { chain: string; i: number };
    const rules = chains.get(frame.chain);
    if (!rules) throw new Error(`no chain ${frame.chain}`);
    const rule = rules[frame.i++];
    if (rule === undefined) {
      stack.pop();
      continue;
    }
    if (++steps > 100_000) throw new Error('loop');
    const t = tokens(rule);
    let matched = true;
    let commentText: string | undefined;
    let target: { kind: string; arg?: string; rest: string[] } | undefined;
    for (let i = 0; i < t.length && matched; i++) {
      const tok = t[i] as string;
      const next = (): string => t[++i] as string;
      switch (tok) {
        case '-p': {
          const name = next();
          matched = (PROTO_NAMES[name] ?? []).includes(p.protocol);
          break;
        }
        case '-m': {
          const m = next();
          if (m === 'conntrack') {
            next();
            matched = next().split(',').includes('NEW');
            // The packet opens a connection: it has no direction but the original one.
            if (t[i + 1] === '--ctdir') i += 2;
          } else if (m === 'tcp' || m === 'udp' || m === 'sctp') {
            if (next() !== '--dport') throw new Error(`unknown ${m} option in ${rule}`);
            matched = portIn(next(), p.dport);
          } else if (m === 'multiport') {
            next();
            matched = portIn(next(), p.dport);
          } else if (m === 'set') {
            const negated = t[i + 1] === '!';
            if (negated) i++;
            next();
            const set = sets.get(next());
            if (!set) throw new Error(`unknown set in ${rule}`);
            lookups++;
            const flags = next();
            const updates = !(t[i + 1] === '!' && t[i + 2] === '--update-counters');
            if (!updates) i += 2;
            if (set.flow) {
              if (flags !== 'src,dst,dst') throw new Error(`flow set matched with ${flags}`);
              const has = holding.has(set.name);
              matched = has !== negated;
              if (has && updates) aggregated.push(set.name);
            } else {
              if (negated || !updates) throw new Error(`unexpected set match options in ${rule}`);
              matched = inSet(set, p, flags);
            }
          } else if (m === 'comment') {
            next();
            commentText = next();
          } else if (m === 'mark') {
            next();
            const [v, mask] = next().split('/').map(Number) as [number, number];
            matched = (mark & mask) === v;
          } else if (m === 'hashlimit') {
            // Always under the limit: the `--hashlimit-above` rule never matches.
            while (t[i + 1]?.startsWith('--hashlimit')) i += 2;
            matched = false;
          } else if (m === 'icmp6') {
            i += 2;
            matched = false; // probes are echo requests, never neighbour discovery
          } else throw new Error(`unknown match ${m} in ${rule}`);
          break;
        }
        case '-j':
        case '-g':
          target = { kind: tok, arg: next(), rest: t.slice(i + 1) };
          i = t.length;
          break;
        default:
          throw new Error(`unknown token ${tok} in ${rule}`);
      }
    }
    if (!matched) continue;
    if (commentText !== undefined) counted.push(commentText);
    if (!target) continue;
    const { kind, arg, rest } = target;
    if (arg === 'ACCEPT') return done('allow');
    if (arg === 'DROP') return done('deny');
    if (arg === 'RETURN') {
      stack.pop();
    } else if (arg === 'MARK') {
      const [v, mask] = (rest[1] as string).split('/').map(Number) as [number, number];
      mark = (mark & ~mask) ^ v;
    } else if (arg === 'SET') {
      const set = sets.get(rest[1] as string);
      if (rest[0] !== '--add-set' || !set?.flow || rest[2] !== 'src,dst,dst' || rest.length !== 3)
        throw new Error(`unexpected SET target in ${rule}`);
      // A new element's counters start with the packet that added it.
      if (!opts.flowSetsFull && !holding.has(set.name)) {
        holding.add(set.name);
        aggregated.push(set.name);
      }
    } else if (kind === '-g') {
      stack[stack.length - 1] = { chain: arg as string, i: 0 };
    } else {
      stack.push({ chain: arg as string, i: 0 });
    }
    if (arg?.startsWith('SY-FLOWFULL-')) notAggregated.push(arg);
  }
  // Off the end of a chain entered with -g: back in SY-FORWARD, which accepts what was marked.
  return done(mark & 0x10000 ? 'allow' : 'deny');
}
