/**
 * Rule text (as the ruleset builder prints it) → the nf_tables expressions nft 1.0.6 would send
 * for it, so a changed chain can be written over nfnetlink with the set elements (rule-batch.ts)
 * instead of through `nft -f`, whose cache of every chain and set of the namespace costs
 * 100–250 ms at 10k services before the first `add rule` (docs/nftables.md "Updates").
 *
 * Only the statements the policy chains use are known here: `meta nfproto`, `meta l4proto` (one
 * protocol, an anonymous set of them or a named set, `!=` too), `th dport` (a port or a range), `ip`/`ip6` `saddr`/`daddr`
 * against a named set (alone or `. th dport`), `counter`, `counter name`, the flow sets' `update`,
 * the verdicts and `comment`. Anything else — service NAT, interface matches, conntrack, port
 * sets — makes encodeRule return undefined, and the caller writes the change with `nft -f`.
 *
 * Encodings are nft's own (`nft --debug=netlink`, and its batches read with strace): an `ip`
 * address match in the inet table gets nft's implicit `meta nfproto` check first, once per rule;
 * a concatenation's fields go to consecutive 32-bit registers; anonymous sets carry nft's
 * `typeof` user data so `nft list` prints their elements by name.
 */
import { netlinkAttribute } from '../../netns/netlink.js';
import { cstring, nested, u32 } from './attributes.js';

const NFTA_LIST_ELEM = 1;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_DATA_VALUE = 1;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFTA_VERDICT_CHAIN = 2;

const NFTA_META_DREG = 1;
const NFTA_META_KEY = 2;
const NFT_META_NFPROTO = 15;
const NFT_META_L4PROTO = 16;

const NFTA_CMP_SREG = 1;
const NFTA_CMP_OP = 2;
const NFTA_CMP_DATA = 3;
const NFT_CMP_EQ = 0;
const NFT_CMP_LTE = 3;
const NFT_CMP_GTE = 5;

const NFTA_PAYLOAD_DREG = 1;
const NFTA_PAYLOAD_BASE = 2;
const NFTA_PAYLOAD_OFFSET = 3;
const NFTA_PAYLOAD_LEN = 4;
const NFT_PAYLOAD_NETWORK_HEADER = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER = 2;

const NFTA_LOOKUP_SET = 1;
const NFTA_LOOKUP_SREG = 2;
const NFTA_LOOKUP_SET_ID = 4;
const NFTA_LOOKUP_FLAGS = 5;
const NFT_LOOKUP_F_INV = 1;

const NFTA_IMMEDIATE_DREG = 1;
const NFTA_IMMEDIATE_DATA = 2;

const NFTA_DYNSET_SET_NAME = 1;
const NFTA_DYNSET_OP = 3;
const NFTA_DYNSET_SREG_KEY = 4;
const NFT_DYNSET_OP_UPDATE = 1;

const NFTA_OBJREF_IMM_TYPE = 1;
const NFTA_OBJREF_IMM_NAME = 2;
const NFT_OBJECT_COUNTER = 1;

/** NFT_REG_VERDICT, and the first data register (NFT_REG_1 = NFT_REG32_00). */
const REG_VERDICT = 0;
const REG_1 = 1;

const VERDICTS = { accept: 1, drop: 0, return: -5, jump: -3, goto: -4 } as const;

const L4PROTO: Readonly<Record<string, number>> = {
  tcp: 6,
  udp: 17,
  sctp: 132,
  icmp: 1,
  'ipv6-icmp': 58,
};

const NFPROTO: Readonly<Record<string, number>> = { ipv4: 2, ipv6: 10 };

/** Where `ip`/`ip6` addresses lie in the network header, and how long they are. */
const ADDRESS = {
  ip: { nfproto: 'ipv4', saddr: 12, daddr: 16, len: 4 },
  ip6: { nfproto: 'ipv6', saddr: 8, daddr: 24, len: 16 },
} as const;

/** nft's `typeof meta l4proto` user data of an anonymous set (key byte order, then the key's expression). */
const L4PROTO_SET_USERDATA = Buffer.from('000401000000030e0004090000000106000410000000', 'hex');
/** NFT_SET_ANONYMOUS | NFT_SET_CONSTANT. */
const ANONYMOUS_CONSTANT = 0x3;
/** nft's data type of `inet_proto`. */
const INET_PROTO_TYPE = 12;

/** An anonymous set a rule needs: written in the same batch, before the rule, under its id. */
export interface AnonymousSet {
  id: number;
  flags: number;
  keyType: number;
  keyLen: number;
  userdata: Buffer;
  /** Keys, one element each. */
  keys: Buffer[];
}

export interface EncodedRule {
  /** The NFTA_RULE_EXPRESSIONS payload: one NFTA_LIST_ELEM per expression. */
  expressions: Buffer;
  /** NFTA_RULE_USERDATA (the comment), when the rule has one. */
  userdata?: Buffer;
  /** Anonymous sets the expressions look up, to create first. */
  sets: AnonymousSet[];
}

function i32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  return b;
}

function port(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

function expression(name: string, attrs: readonly Buffer[]): Buffer {
  return nested(NFTA_LIST_ELEM, [
    netlinkAttribute(NFTA_EXPR_NAME, cstring(name)),
    nested(NFTA_EXPR_DATA, attrs),
  ]);
}

const meta = (key: number, dreg: number): Buffer =>
  expression('meta', [
    netlinkAttribute(NFTA_META_KEY, u32(key)),
    netlinkAttribute(NFTA_META_DREG, u32(dreg)),
  ]);

const cmp = (op: number, value: Buffer, sreg = REG_1): Buffer =>
  expression('cmp', [
    netlinkAttribute(NFTA_CMP_SREG, u32(sreg)),
    netlinkAttribute(NFTA_CMP_OP, u32(op)),
    nested(NFTA_CMP_DATA, [netlinkAttribute(NFTA_DATA_VALUE, value)]),
  ]);

const payload = (base: number, offset: number, len: number, dreg: number): Buffer =>
  expression('payload', [
    netlinkAttribute(NFTA_PAYLOAD_DREG, u32(dreg)),
    netlinkAttribute(NFTA_PAYLOAD_BASE, u32(base)),
    netlinkAttribute(NFTA_PAYLOAD_OFFSET, u32(offset)),
    netlinkAttribute(NFTA_PAYLOAD_LEN, u32(len)),
  ]);

const immediateValue = (dreg: number, value: Buffer): Buffer =>
  expression('immediate', [
    netlinkAttribute(NFTA_IMMEDIATE_DREG, u32(dreg)),
    nested(NFTA_IMMEDIATE_DATA, [netlinkAttribute(NFTA_DATA_VALUE, value)]),
  ]);

/** A set lookup of register 1: a named set by name, an anonymous one of this batch by its id too. */
function lookup(set: string, inverted = false, id?: number): Buffer {
  return expression('lookup', [
    netlinkAttribute(NFTA_LOOKUP_SREG, u32(REG_1)),
    netlinkAttribute(NFTA_LOOKUP_SET, cstring(set)),
    ...(id !== undefined ? [netlinkAttribute(NFTA_LOOKUP_SET_ID, u32(id))] : []),
    ...(inverted ? [netlinkAttribute(NFTA_LOOKUP_FLAGS, u32(NFT_LOOKUP_F_INV))] : []),
  ]);
}

function verdict(code: keyof typeof VERDICTS, chain?: string): Buffer {
  const v = [netlinkAttribute(NFTA_VERDICT_CODE, i32(VERDICTS[code]))];
  if (chain !== undefined) v.push(netlinkAttribute(NFTA_VERDICT_CHAIN, cstring(chain)));
  return expression('immediate', [
    netlinkAttribute(NFTA_IMMEDIATE_DREG, u32(REG_VERDICT)),
    nested(NFTA_IMMEDIATE_DATA, [nested(NFTA_DATA_VERDICT, v)]),
  ]);
}

/**
 * The register of the concatenation field starting at 32-bit slot `slot`: nft names a slot on a
 * 16-byte boundary by its 128-bit register (NFT_REG_1 + slot/4), any other by NFT_REG32_00 + slot.
 */
export function concatRegister(slot: number): number {
  return slot % 4 === 0 ? REG_1 + slot / 4 : 8 + slot;
}

/** The rule's comment as nft stores it: NFTNL_UDATA_RULE_COMMENT, length, the text with its NUL. */
export function commentUserdata(text: string): Buffer {
  const s = cstring(text);
  return Buffer.concat([Buffer.from([0, s.length]), s]);
}

const IDENT = /^[A-Za-z0-9_.-]+$/;

/** Splits a rule into tokens: words, `{ … }` groups and quoted strings stay whole. */
function tokens(text: string): string[] | undefined {
  const out: string[] = [];
  for (let i = 0; i < text.length;) {
    const c = text[i] as string;
    if (c === ' ') {
      i++;
      continue;
    }
    const close = c === '{' ? text.indexOf('}', i) : c === '"' ? text.indexOf('"', i + 1) : -1;
    if ((c === '{' || c === '"') && close < 0) return undefined;
    const end = close >= 0 ? close + 1 : text.indexOf(' ', i) < 0 ? text.length : text.indexOf(' ', i);
    out.push(text.slice(i, end));
    i = end;
  }
  return out;
}

function portNumber(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 0xffff ? n : undefined;
}

/** `{ a, b }` → [a, b]. */
function members(group: string): string[] {
  return group
    .slice(1, -1)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

class Encoder {
  private readonly out: Buffer[] = [];
  readonly sets: AnonymousSet[] = [];
  /** The family a previous match established (nft adds its `meta nfproto` check only once). */
  private nfproto: string | undefined;
  /** `meta l4proto` was matched: `th dport` has its protocol (nft adds no dependency then). */
  private l4: boolean = false;
  private verdictSeen = false;
  userdata: Buffer | undefined;

  constructor(private readonly nextSetId: () => number) {}

  get expressions(): Buffer {
    return Buffer.concat(this.out);
  }

  private family(nfproto: string): void {
    if (this.nfproto === nfproto) return;
    this.out.push(meta(NFT_META_NFPROTO, REG_1), cmp(NFT_CMP_EQ, Buffer.from([NFPROTO[nfproto] as number])));
    this.nfproto = nfproto;
  }

  private l4protoSet(group: string, inverted: boolean): boolean {
    const keys = members(group).map((p) => L4PROTO[p]);
    if (keys.length === 0 || keys.some((k) => k === undefined)) return false;
    const id = this.nextSetId();
    this.sets.push({
      id,
      flags: ANONYMOUS_CONSTANT,
      keyType: INET_PROTO_TYPE,
      keyLen: 1,
      userdata: L4PROTO_SET_USERDATA,
      keys: keys.map((k) => Buffer.from([k as number])),
    });
    this.out.push(meta(NFT_META_L4PROTO, REG_1), lookup('__set%d', inverted, id));
    return true;
  }

  /** `meta …`: returns how many tokens it took, 0 when it is not understood. */
  private metaMatch(t: readonly string[], i: number): number {
    const key = t[i + 1];
    let value = t[i + 2];
    if (key === 'nfproto' && value !== undefined && NFPROTO[value] !== undefined) {
      this.family(value);
      return 3;
    }
    if (key !== 'l4proto' || value === undefined) return 0;
    let inverted = false;
    if (value === '!=') {
      inverted = true;
      value = t[i + 3];
      if (value === undefined || !(value.startsWith('{') || value.startsWith('@'))) return 0;
    }
    // Followed by `.`: a concatenation key (the decision tables' maps), not known here.
    if (t[i + (inverted ? 4 : 3)] === '.') return 0;
    this.l4 = true;
    const used = inverted ? 4 : 3;
    if (value.startsWith('{')) return this.l4protoSet(value, inverted) ? used : 0;
    if (value.startsWith('@')) {
      if (!IDENT.test(value.slice(1))) return 0;
      this.out.push(meta(NFT_META_L4PROTO, REG_1), lookup(value.slice(1), inverted));
      return used;
    }
    const proto = L4PROTO[value];
    if (proto === undefined) return 0;
    this.out.push(meta(NFT_META_L4PROTO, REG_1), cmp(NFT_CMP_EQ, Buffer.from([proto])));
    return 3;
  }

  private dport(t: readonly string[], i: number): number {
    const value = t[i + 2];
    if (t[i + 1] !== 'dport' || value === undefined || !this.l4) return 0;
    const range = /^(\d+)-(\d+)$/.exec(value);
    const dport = payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG_1);
    if (range) {
      const [first, last] = [portNumber(range[1] as string), portNumber(range[2] as string)];
      if (first === undefined || last === undefined) return 0;
      this.out.push(dport, cmp(NFT_CMP_GTE, port(first)), cmp(NFT_CMP_LTE, port(last)));
      return 3;
    }
    const p = portNumber(value);
    if (p === undefined) return 0;
    this.out.push(dport, cmp(NFT_CMP_EQ, port(p)));
    return 3;
  }

  /** `ip daddr @set`, `ip6 saddr . th dport @set`. */
  private addressLookup(t: readonly string[], i: number): number {
    const family = ADDRESS[t[i] as 'ip' | 'ip6'];
    const field = t[i + 1];
    if (field !== 'saddr' && field !== 'daddr') return 0;
    const withPort = t[i + 2] === '.' && t[i + 3] === 'th' && t[i + 4] === 'dport';
    if (withPort && !this.l4) return 0;
    const set = t[i + (withPort ? 5 : 2)];
    if (set === undefined || !set.startsWith('@') || !IDENT.test(set.slice(1))) return 0;
    this.family(family.nfproto);
    this.out.push(payload(NFT_PAYLOAD_NETWORK_HEADER, family[field], family.len, REG_1));
    if (withPort) this.out.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, concatRegister(family.len / 4)));
    this.out.push(lookup(set.slice(1)));
    return withPort ? 6 : 3;
  }

  /** `update @flows4 { ip saddr . ip daddr . meta l4proto . th dport|0 [. 0xTAG] }`. */
  private update(t: readonly string[], i: number): number {
    const set = t[i + 1];
    const group = t[i + 2];
    if (!set?.startsWith('@') || !IDENT.test(set.slice(1)) || !group?.startsWith('{')) return 0;
    const fields = group
      .slice(1, -1)
      .split(' . ')
      .map((f) => f.trim());
    let slot = 0;
    const loads: Buffer[] = [];
    for (const f of fields) {
      const reg = concatRegister(slot);
      const addr = /^(ip6?) (saddr|daddr)$/.exec(f);
      if (addr) {
        const family = ADDRESS[addr[1] as 'ip' | 'ip6'];
        // An address read needs its family established by an earlier match.
        if (this.nfproto !== family.nfproto) return 0;
        loads.push(
          payload(NFT_PAYLOAD_NETWORK_HEADER, family[addr[2] as 'saddr' | 'daddr'], family.len, reg),
        );
        slot += family.len / 4;
      } else if (f === 'meta l4proto') {
        loads.push(meta(NFT_META_L4PROTO, reg));
        slot += 1;
      } else if (f === 'th dport') {
        if (!this.l4) return 0;
        loads.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg));
        slot += 1;
      } else if (f === '0') {
        // A zero port: nft sizes the constant as the field's type (inet_service, 2 bytes).
        loads.push(immediateValue(reg, port(0)));
        slot += 1;
      } else if (/^0x[0-9a-f]{8}$/.test(f)) {
        // A mark: host byte order, as nft writes it.
        const mark = Buffer.alloc(4);
        mark.writeUInt32LE(parseInt(f, 16) >>> 0);
        loads.push(immediateValue(reg, mark));
        slot += 1;
      } else return 0;
    }
    this.out.push(
      ...loads,
      expression('dynset', [
        netlinkAttribute(NFTA_DYNSET_SREG_KEY, u32(REG_1)),
        netlinkAttribute(NFTA_DYNSET_OP, u32(NFT_DYNSET_OP_UPDATE)),
        netlinkAttribute(NFTA_DYNSET_SET_NAME, cstring(set.slice(1))),
      ]),
    );
    return 3;
  }

  private counter(t: readonly string[], i: number): number {
    if (t[i + 1] === 'name') {
      const name = /^"([A-Za-z0-9_.-]+)"$/.exec(t[i + 2] ?? '')?.[1];
      if (name === undefined) return 0;
      this.out.push(
        expression('objref', [
          netlinkAttribute(NFTA_OBJREF_IMM_TYPE, u32(NFT_OBJECT_COUNTER)),
          // nft sends the name without its NUL.
          netlinkAttribute(NFTA_OBJREF_IMM_NAME, Buffer.from(name, 'latin1')),
        ]),
      );
      return 3;
    }
    this.out.push(expression('counter', []));
    return 1;
  }

  private verdict(t: readonly string[], i: number): number {
    if (this.verdictSeen) return 0;
    const word = t[i] as string;
    if (word === 'goto' || word === 'jump') {
      const chain = t[i + 1];
      if (chain === undefined || !IDENT.test(chain)) return 0;
      this.out.push(verdict(word, chain));
      this.verdictSeen = true;
      return 2;
    }
    this.out.push(verdict(word as 'accept' | 'drop' | 'return'));
    this.verdictSeen = true;
    return 1;
  }

  private comment(t: readonly string[], i: number): number {
    const text = /^"([^"\\]*)"$/.exec(t[i + 1] ?? '')?.[1];
    // The comment ends the rule, and nft keeps at most 127 bytes of it.
    if (text === undefined || i + 2 !== t.length || Buffer.byteLength(text) > 127) return 0;
    this.userdata = commentUserdata(text);
    return 2;
  }

  /** Encodes the whole rule; false when any part of it is not known here. */
  encode(text: string): boolean {
    const t = tokens(text);
    if (!t || t.length === 0) return false;
    for (let i = 0; i < t.length;) {
      const word = t[i] as string;
      let used = 0;
      if (this.verdictSeen && word !== 'comment') return false;
      if (word === 'meta') used = this.metaMatch(t, i);
      else if (word === 'th') used = this.dport(t, i);
      else if (word === 'ip' || word === 'ip6') used = this.addressLookup(t, i);
      else if (word === 'update') used = this.update(t, i);
      else if (word === 'counter') used = this.counter(t, i);
      else if (word in VERDICTS) used = this.verdict(t, i);
      else if (word === 'comment') used = this.comment(t, i);
      if (used === 0) return false;
      i += used;
    }
    return true;
  }
}

/**
 * The expressions of one rule, or undefined when it uses anything not known here. `nextSetId`
 * numbers the anonymous sets of the batch (NFTA_SET_ID: unique within one transaction).
 */
export function encodeRule(text: string, nextSetId: () => number): EncodedRule | undefined {
  const e = new Encoder(nextSetId);
  if (!e.encode(text)) return undefined;
  return { expressions: e.expressions, ...(e.userdata ? { userdata: e.userdata } : {}), sets: e.sets };
}
