/**
 * A chain made of pieces, each rendered when the chain's rules are read: the services' shared
 * chains (SY-SERVICES, SY-NODEPORTS, SY-SVC-REJECT), a few rules from each of 10k service ports.
 * Nothing of their text is kept between applies (see service-port.ts). Two such chains are
 * compared piece by piece: an unchanged piece is the same object (the ports' memo), so telling
 * whether a service change changed the chain renders only the changed ports' pieces. Pieces that
 * differ count as a change even where the whole would not (rules moved from one piece to the
 * next): the chain is then written again, never left stale.
 */
import { sameRuleLists, type ChainSpec } from './plan.js';

export class PiecesChain<P> implements ChainSpec {
  constructor(
    readonly name: string,
    private readonly pieces: readonly P[],
    /** A piece's rules; a function of the piece alone, shared by every chain of its kind. */
    private readonly render: (piece: P) => readonly string[],
  ) {}

  get rules(): string[] {
    const out: string[] = [];
    for (const p of this.pieces) for (const r of this.render(p)) out.push(r);
    return out;
  }

  get namesNoFlowSet(): true {
    return true;
  }

  sameRulesAs(other: ChainSpec): boolean {
    if (!(other instanceof PiecesChain) || other.render !== this.render)
      return sameRuleLists(this.rules, other.rules);
    const theirs = other.pieces as readonly P[];
    if (theirs.length !== this.pieces.length) return sameRuleLists(this.rules, other.rules);
    return this.pieces.every(
      (p, i) => p === theirs[i] || sameRuleLists(this.render(p), this.render(theirs[i] as P)),
    );
  }
}
