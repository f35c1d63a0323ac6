/**
 * previous NftRuleset → next as one nf_tables batch over nfnetlink, when every written rule is one
 * rule-encoder.ts knows: the usual label or policy change (a pod's tier chains refilled, the flow
 * chains of the rules it gains added and of those it loses deleted, peer sets added and members
 * changed). `nft -f` of the same change costs 100–250 ms at 10k services, almost all of it nft
 * dumping every chain and set of the namespace into its cache before the first `add rule`; the
 * batch is a few milliseconds of kernel work. The batch is one transaction like `nft -f`: the
 * kernel commits all of it or nothing.
 *
 * Undefined whenever the change is not of that kind — a base chain's rules, a chain or set
 * declaration changed, a set of a shape elements.ts does not write, a rule the encoder does not
 * know: the caller then writes the nft diff (diff.ts).
 *
 * The order is diff.ts's: new chains and sets first (rules and map elements name them), then
 * element changes, then each changed chain flushed and refilled, then vanished chains flushed and
 * deleted, then vanished maps and sets.
 */
import { netlinkAttribute } from '../../netns/netlink.js';
import { cstring, nested, u32 } from './attributes.js';
import { byName, sameList } from './diff.js';
import { ELEMENT_INTERVAL_END, kernelElements, shapeOf, type ElementShape } from './elements.js';
import { elementDeltas, MAX_DELTA_ELEMENTS, type SetElementChange } from './member-delta.js';
import { elementAttribute, elementMessages, messageBody, type BatchMessage } from './nfnetlink.js';
import type { NftChain, NftRuleset, NftSet } from './objects.js';
import { encodeRule, type AnonymousSet, type EncodedRule } from './rule-encoder.js';

const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_DELCHAIN = 5;
const NFT_MSG_NEWRULE = 6;
const NFT_MSG_DELRULE = 8;
const NFT_MSG_NEWSET = 9;
const NFT_MSG_DELSET = 11;
const NFT_MSG_NEWSETELEM = 12;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;

const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_RULE_USERDATA = 7;
const NFTA_SET_TABLE = 1;
const NFTA_SET_NAME = 2;
const NFTA_SET_FLAGS = 3;
const NFTA_SET_KEY_TYPE = 4;
const NFTA_SET_KEY_LEN = 5;
const NFTA_SET_DESC = 9;
const NFTA_SET_DESC_SIZE = 1;
const NFTA_SET_ID = 10;
const NFTA_SET_USERDATA = 13;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_SET_ELEM_LIST_SET_ID = 4;

const NFT_SET_INTERVAL = 0x4;

/**
 * The largest batch sent (bytes): netlink refuses a message longer than the socket's send buffer
 * (net.core.wmem_default, 208 KiB by default). A larger change goes to `nft -f`.
 */
export const MAX_BATCH_BYTES = 192 * 1024;

/** How nft 1.0.6 declares a named set of each shape a new peer set can have (flags, key, user data). */
const NAMED_SETS: Partial<
  Record<ElementShape, { flags: number; keyType: number; keyLen: number; userdata: string }>
> = {
  'ipv4-interval': { flags: NFT_SET_INTERVAL, keyType: 7, keyLen: 4, userdata: '000402000000' },
  'ipv6-interval': { flags: NFT_SET_INTERVAL, keyType: 8, keyLen: 16, userdata: '000402000000' },
  'ipv4-port': { flags: 0, keyType: (7 << 6) | 13, keyLen: 8, userdata: '000400000000030800040d0000000100' },
  'ipv6-port': { flags: 0, keyType: (8 << 6) | 13, keyLen: 20, userdata: '000400000000030800040d0000000100' },
};

/** What a batch writes, for the apply's `changed` list. */
export interface RuleBatch {
  messages: BatchMessage[];
  /** `set:NAME`, `map:NAME`, `chain:NAME` of every object written or deleted. */
  changed: string[];
}

/** A DELCHAIN of `name` in `table` (nf_tables refuses it, and its batch, when the chain is missing). */
export function chainDeletion(table: string, name: string): BatchMessage {
  return {
    object: `chain ${name}`,
    type: NFT_MSG_DELCHAIN,
    flags: 0,
    body: messageBody([
      netlinkAttribute(NFTA_CHAIN_TABLE, cstring(table)),
      netlinkAttribute(NFTA_CHAIN_NAME, cstring(name)),
    ]),
  };
}

class BatchBuilder {
  readonly messages: BatchMessage[] = [];
  private setId = 0;
  readonly nextSetId = (): number => ++this.setId;

  constructor(private readonly table: string) {}

  private push(object: string, type: number, flags: number, attrs: Buffer[]): void {
    this.messages.push({ object, type, flags, body: messageBody(attrs) });
  }

  addChain(name: string): void {
    this.push(`chain ${name}`, NFT_MSG_NEWCHAIN, NLM_F_CREATE, [
      netlinkAttribute(NFTA_CHAIN_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_CHAIN_NAME, cstring(name)),
    ]);
  }

  /** A DELRULE naming only the chain: every rule of it goes. */
  flushChain(name: string): void {
    this.push(`chain ${name}`, NFT_MSG_DELRULE, 0, [
      netlinkAttribute(NFTA_RULE_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_RULE_CHAIN, cstring(name)),
    ]);
  }

  deleteChain(name: string): void {
    this.messages.push(chainDeletion(this.table, name));
  }

  deleteSet(kind: string, name: string): void {
    this.push(`${kind} ${name}`, NFT_MSG_DELSET, 0, [
      netlinkAttribute(NFTA_SET_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_SET_NAME, cstring(name)),
    ]);
  }

  /** A named set of one of NAMED_SETS' shapes, and its elements. */
  addSet(set: NftSet, shape: ElementShape): boolean {
    const decl = NAMED_SETS[shape];
    if (!decl) return false;
    this.push(`set ${set.name}`, NFT_MSG_NEWSET, NLM_F_CREATE, [
      netlinkAttribute(NFTA_SET_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_SET_NAME, cstring(set.name)),
      netlinkAttribute(NFTA_SET_FLAGS, u32(decl.flags)),
      netlinkAttribute(NFTA_SET_KEY_TYPE, u32(decl.keyType)),
      netlinkAttribute(NFTA_SET_KEY_LEN, u32(decl.keyLen)),
      netlinkAttribute(NFTA_SET_ID, u32(this.nextSetId())),
      netlinkAttribute(NFTA_SET_USERDATA, Buffer.from(decl.userdata, 'hex')),
    ]);
    const elements = set.elements.flatMap((e) => kernelElements(shape, e));
    // nft opens an interval set with an end element at address zero unless an interval starts there.
    const first = elements[0];
    if (decl.flags & NFT_SET_INTERVAL && first && first.key.some((b) => b !== 0))
      elements.unshift({ key: Buffer.alloc(decl.keyLen), flags: ELEMENT_INTERVAL_END });
    const change: SetElementChange = { kind: 'set', name: set.name, flush: false, remove: [], add: elements };
    this.messages.push(...elementMessages(this.table, [change]));
    return true;
  }

  private anonymousSet(s: AnonymousSet): void {
    const name = cstring('__set%d');
    this.push('anonymous set', NFT_MSG_NEWSET, NLM_F_CREATE, [
      netlinkAttribute(NFTA_SET_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_SET_NAME, name),
      netlinkAttribute(NFTA_SET_FLAGS, u32(s.flags)),
      netlinkAttribute(NFTA_SET_KEY_TYPE, u32(s.keyType)),
      netlinkAttribute(NFTA_SET_KEY_LEN, u32(s.keyLen)),
      netlinkAttribute(NFTA_SET_ID, u32(s.id)),
      nested(NFTA_SET_DESC, [netlinkAttribute(NFTA_SET_DESC_SIZE, u32(s.keys.length))]),
      netlinkAttribute(NFTA_SET_USERDATA, s.userdata),
    ]);
    this.push('anonymous set', NFT_MSG_NEWSETELEM, NLM_F_CREATE, [
      netlinkAttribute(NFTA_SET_ELEM_LIST_TABLE, cstring(this.table)),
      netlinkAttribute(NFTA_SET_ELEM_LIST_SET, name),
      netlinkAttribute(NFTA_SET_ELEM_LIST_SET_ID, u32(s.id)),
      nested(
        NFTA_SET_ELEM_LIST_ELEMENTS,
        s.keys.map((key) => elementAttribute({ key, flags: 0 })),
      ),
    ]);
  }

  /** The chain's rules, appended in order; false when one of them cannot be encoded. */
  encodeRules(chain: NftChain): EncodedRule[] | undefined {
    const out: EncodedRule[] = [];
    for (const text of chain.rules) {
      const rule = encodeRule(text, this.nextSetId);
      if (!rule) return undefined;
      out.push(rule);
    }
    return out;
  }

  addRules(chain: string, rules: readonly EncodedRule[]): void {
    rules.forEach((r, i) => {
      for (const s of r.sets) this.anonymousSet(s);
      this.push(`rule ${i + 1} of chain ${chain}`, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, [
        netlinkAttribute(NFTA_RULE_TABLE, cstring(this.table)),
        netlinkAttribute(NFTA_RULE_CHAIN, cstring(chain)),
        nested(NFTA_RULE_EXPRESSIONS, [r.expressions]),
        ...(r.userdata ? [netlinkAttribute(NFTA_RULE_USERDATA, r.userdata)] : []),
      ]);
    });
  }
}

/** The batch that makes `table` go from `prev` to `next`, or undefined (see the top). */
export function ruleBatch(table: string, prev: NftRuleset, next: NftRuleset): RuleBatch | undefined {
  const prevChains = byName(prev.chains);
  const nextChains = byName(next.chains);
  const prevSets = [...prev.sets, ...prev.maps];
  const nextSets = [...next.sets, ...next.maps];
  const prevSetsByName = byName(prevSets);
  const nextSetsByName = byName(nextSets);
  const b = new BatchBuilder(table);
  const changed: string[] = [];

  // Chains: declarations kept, base chains untouched, every written rule encodable.
  const written: { chain: NftChain; rules: EncodedRule[]; isNew: boolean }[] = [];
  for (const chain of next.chains) {
    const p = prevChains.get(chain.name);
    if (p && (p.spec !== chain.spec || p.base !== chain.base)) return undefined;
    if (p && (p === chain || sameList(p.rules, chain.rules))) continue;
    if (chain.base || chain.spec !== '') return undefined;
    const rules = b.encodeRules(chain);
    if (!rules) return undefined;
    written.push({ chain, rules, isNew: !p });
  }
  const gone = prev.chains.filter((c) => !nextChains.has(c.name));
  if (gone.some((c) => c.base)) return undefined;

  // Sets: new ones of a known shape; vanished ones of any kind but named counters and limits.
  const added = nextSets.filter((s) => !prevSetsByName.has(s.name));
  const vanished = prevSets.filter((s) => !nextSetsByName.has(s.name));
  if (vanished.some((s) => s.kind !== 'set' && s.kind !== 'map')) return undefined;
  let addedElements = 0;
  for (const s of added) {
    if (s.kind !== 'set' || !NAMED_SETS[shapeOf(s.kind, s.spec) as ElementShape]) return undefined;
    addedElements += s.elements.length;
  }
  const deltas = elementDeltas(prevSets, nextSets);
  if (!deltas) return undefined;
  const deltaElements = deltas.reduce((n, d) => n + d.add.length + d.remove.length, 0);
  if (addedElements + deltaElements > MAX_DELTA_ELEMENTS) return undefined;
  if (written.length === 0 && gone.length === 0 && added.length === 0 && vanished.length === 0)
    return undefined; // members only: member-delta.ts's case

  for (const s of added) {
    b.addSet(s, shapeOf(s.kind, s.spec) as ElementShape);
    changed.push(`set:${s.name}`);
  }
  for (const w of written) if (w.isNew) b.addChain(w.chain.name);
  b.messages.push(...elementMessages(table, deltas));
  changed.push(...deltas.map((d) => `${d.kind}:${d.name}`));
  for (const w of written) {
    if (!w.isNew) b.flushChain(w.chain.name);
    b.addRules(w.chain.name, w.rules);
    changed.push(`chain:${w.chain.name}`);
  }
  for (const c of gone) b.flushChain(c.name);
  for (const s of vanished.filter((v) => v.kind === 'map')) b.deleteSet('map', s.name);
  for (const c of gone) {
    b.deleteChain(c.name);
    changed.push(`chain:${c.name}`);
  }
  for (const s of vanished.filter((v) => v.kind === 'set')) b.deleteSet('set', s.name);
  changed.push(...vanished.map((s) => `${s.kind}:${s.name}`));
  // Each message: its netlink header (16 bytes) and body; the batch's begin and end: 40 bytes.
  const bytes = b.messages.reduce((n, m) => n + 16 + m.body.length, 40);
  if (bytes > MAX_BATCH_BYTES) return undefined;
  return { messages: b.messages, changed };
}
