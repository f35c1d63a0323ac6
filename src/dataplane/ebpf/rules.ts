/**
 * Rule codegen: straight-line code per rule, in the order the IR evaluates them (global tier,
 * then the Kubernetes tier, then its default). A rule is a run of checks that each jump to the
 * rule's end on a mismatch; what follows the checks is the match: count, then the action. A
 * deciding action jumps to the shared allow or deny tail with the rule's counter slot in r1, which
 * names the flow aggregate the tails add to.
 *
 * Two verifier constraints shape it. Dead code is rejected, so nothing is emitted after a rule
 * that always matches and always decides (and labels nobody jumps to are not placed). Jump
 * offsets are 16 bits, so jumps to the shared tails (allow, deny, the Kubernetes tier) go
 * through islands of `goto`s placed every few thousand instructions.
 */
import { R0, R1, R2, R3, R6, R7, R8, R9, type Assembler } from '../../bpf/index.js';
import type { Rule, RuleSet } from '../../ir/types.js';
import { emitFlowCall, SUBPROGRAMS, type Subprogram } from './emit.js';
import { FLOW_CONNECTIONS, FLOW_VERDICT, IPPROTO, PROTOCOL_NUMBERS, SKB } from './layout.js';

export type FarTarget = 'allow' | 'deny' | 'k8s';

export interface RuleNumbers {
  /** Index of an IP set in the node trie. */
  set(id: string): number;
  portSet(id: string): number;
  /** Counter slot of a rule (by IR rule id) of this rule set. */
  slot(ruleId: string): number;
  defaultSlot: number;
}

/** A rule in words, as listings show it: `<id>: deny TCP ports 5432 peer in <set>`. */
export function describeRule(r: Rule): string {
  const parts: string[] = [r.action];
  if (r.protocol) parts.push(r.protocol);
  if (r.ports)
    parts.push(
      `ports ${r.ports.map((p) => (p.first === p.last ? `${p.first}` : `${p.first}-${p.last}`)).join(',')}`,
    );
  if (r.peerSet) parts.push(`peer in ${r.peerSet}`);
  if (r.peerPortSet) parts.push(`(peer, port) in ${r.peerPortSet}`);
  return `${r.id}: ${parts.join(' ')}`;
}

/** Instructions between islands; far below the 32767 a 16-bit offset reaches. */
const ISLAND_SPACING = 4096;

/** Emits a program's rule tiers and tracks what the rest of the program must provide. */
export class RuleEmitter {
  /** Targets some emitted code jumps to. */
  readonly referenced = new Set<FarTarget>();
  /** Subprograms called. */
  readonly calls = new Set<Subprogram>();
  /** Whether code placed next can be reached by falling through. */
  reachable = true;
  private island = 0;
  private islandStart: number;
  /** Targets routed through the current island. */
  private routed = new Set<FarTarget>();
  private ruleNumber = 0;

  constructor(private readonly asm: Assembler) {
    this.islandStart = asm.length;
  }

  /** The label a jump to `target` should use from here. */
  far(target: FarTarget): string {
    this.referenced.add(target);
    this.routed.add(target);
    return `${target}~${this.island}`;
  }

  /** Places `target` (its island aliases too) if anything jumps there; returns whether it did. */
  place(target: FarTarget): boolean {
    if (!this.referenced.has(target)) return false;
    if (this.routed.has(target)) this.asm.label(`${target}~${this.island}`);
    this.asm.label(target);
    this.routed.delete(target);
    this.reachable = true;
    return true;
  }

  private maybeIsland(): void {
    if (this.asm.length - this.islandStart < ISLAND_SPACING || !this.reachable) return;
    const past = `island${this.island}_end`;
    this.asm.comment('island: relays to the shared tails, out of reach of 16-bit jumps').ja(past);
    const from = this.island;
    this.island++;
    for (const t of this.routed) this.asm.label(`${t}~${from}`).ja(`${t}~${this.island}`);
    this.asm.label(past);
    this.islandStart = this.asm.length;
  }

  /** Calls a subprogram (and has the program provide it). */
  call(sub: Subprogram): void {
    this.calls.add(sub);
    this.asm.callLocal(sub);
  }

  private count(slot: number): void {
    this.asm.mov64(R1, slot).ldxw(R2, R6, SKB.len);
    this.call(SUBPROGRAMS.count);
  }

  /**
   * Jumps to the allow or deny tail with the deciding rule's slot in r1 (nothing between here and
   * the tail touches r1: islands are plain jumps). The tails add to that rule's flow aggregate.
   */
  private decide(target: 'allow' | 'deny', slot: number): void {
    this.asm.mov64(R1, slot).ja(this.far(target));
  }

  /** A rule that can never match (ICMP with ports, an empty port list): no code at all. */
  private static never(rule: Rule): boolean {
    if (rule.ports !== undefined && rule.ports.length === 0) return true;
    return rule.protocol === 'ICMP' && (rule.ports !== undefined || rule.peerPortSet !== undefined);
  }

  /**
   * Emits the checks of one rule, then `onMatch`. Returns false when the rule always matches, so
   * that a deciding action makes everything after it unreachable.
   */
  private rule(rule: Rule, numbers: RuleNumbers, onMatch: () => void): boolean {
    const asm = this.asm;
    const n = this.ruleNumber++;
    const next = `r${n}_next`;
    asm.comment(`rule ${describeRule(rule)} (counter slot ${numbers.slot(rule.id)})`);
    let conditional = false;
    if (rule.protocol !== undefined) {
      asm.jne(R9, PROTOCOL_NUMBERS[rule.protocol], next);
      conditional = true;
    } else if (rule.ports !== undefined || rule.peerPortSet !== undefined) {
      // Ports mean a port-carrying protocol, whichever it is.
      asm
        .jeq(R9, IPPROTO.TCP, `r${n}_proto`)
        .jeq(R9, IPPROTO.UDP, `r${n}_proto`)
        .jne(R9, IPPROTO.SCTP, next)
        .label(`r${n}_proto`);
      conditional = true;
    }
    if (rule.ports !== undefined) {
      const ranges = [...rule.ports].sort((a, b) => a.first - b.first);
      ranges.forEach((r, i) => {
        if (r.first > 0) asm.jlt(R8, r.first, next);
        if (i === ranges.length - 1) asm.jgt(R8, r.last, next);
        else asm.jle(R8, r.last, `r${n}_port`);
      });
      if (ranges.length > 1) asm.label(`r${n}_port`);
      conditional = true;
    }
    if (rule.peerSet !== undefined) {
      asm.mov64(R1, numbers.set(rule.peerSet)).mov64(R2, R7);
      this.call(SUBPROGRAMS.inSet);
      asm.jeq(R0, 0, next);
      conditional = true;
    }
    if (rule.peerPortSet !== undefined) {
      asm.mov64(R1, numbers.portSet(rule.peerPortSet)).mov64(R2, R7).mov64(R3, R8);
      this.call(SUBPROGRAMS.inPortSet);
      asm.jeq(R0, 0, next);
      conditional = true;
    }
    this.count(numbers.slot(rule.id));
    onMatch();
    if (conditional) asm.label(next);
    return conditional;
  }

  /** The global tier: Log adds to its aggregate and goes on, Pass jumps to the Kubernetes tier, Allow/Deny decide. */
  globalTier(rs: RuleSet, numbers: RuleNumbers): void {
    if (rs.globalRules.length > 0)
      this.asm.comment('global tier: rules in order, Log goes on, Pass skips to Kubernetes');
    for (const rule of rs.globalRules) {
      if (!this.reachable) return;
      if (RuleEmitter.never(rule)) continue;
      const decides = rule.action !== 'log';
      const conditional = this.rule(rule, numbers, () => {
        switch (rule.action) {
          case 'log':
            this.asm.mov64(R1, numbers.slot(rule.id));
            emitFlowCall(this.asm, FLOW_VERDICT.log, FLOW_CONNECTIONS.ifOpening);
            this.calls.add(SUBPROGRAMS.flow);
            break;
          case 'pass':
            this.asm.ja(this.far('k8s'));
            break;
          case 'allow':
            this.decide('allow', numbers.slot(rule.id));
            break;
          case 'deny':
            this.decide('deny', numbers.slot(rule.id));
            break;
        }
      });
      if (!conditional && decides) this.reachable = false;
      this.maybeIsland();
    }
  }

  /** The Kubernetes tier (any match allows) and its default. */
  kubernetesTier(rs: RuleSet, numbers: RuleNumbers): void {
    this.place('k8s');
    this.asm.comment('Kubernetes tier: any matching rule allows');
    for (const rule of rs.kubernetesRules) {
      if (!this.reachable) return;
      if (RuleEmitter.never(rule)) continue;
      const conditional = this.rule(rule, numbers, () => this.decide('allow', numbers.slot(rule.id)));
      if (!conditional) this.reachable = false;
      this.maybeIsland();
    }
    if (!this.reachable) return;
    this.asm.comment(
      `no rule matched: default ${rs.kubernetesDefault} (counter slot ${numbers.defaultSlot})`,
    );
    this.count(numbers.defaultSlot);
    this.decide(rs.kubernetesDefault === 'deny' ? 'deny' : 'allow', numbers.defaultSlot);
    this.reachable = false;
  }
}
