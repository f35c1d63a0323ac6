/**
 * What the chaos test expects of each probed connection, given when each revision was being
 * applied and when each tamper was in the kernel. Pure: the verdicts come from the oracle's
 * allowed pairs per revision, the times from the driver's log.
 *
 * - A revision is *possibly in force* from the moment its `lab apply` starts until the next
 *   successful apply has finished (the agents report that one in force): a killed or failed apply
 *   may have installed any part of its revision, and the next apply replaces it.
 * - A connection **must fail** when every revision possibly in force while it was being made
 *   denies its pair (denied before and after a transition: never open by mistake).
 * - A connection **must succeed** when exactly one revision was possibly in force, it allows the
 *   pair, and that revision had been in force for `settleMs` already.
 * - While a tamper is in the kernel (from the tamper until it is found repaired, plus slack),
 *   connections to servers on the tampered node are neither: the tamper opens them on purpose,
 *   and how long it lasts is measured separately (the repair time).
 */
/** A client → server pair, as the chaos world names it (`cli/c0→app/s1`). */
type Pair = string;

export interface ProbeRecord {
  pair: Pair;
  server: string;
  /** Epoch ms when the connect started. */
  t: number;
  /** How long until the handshake completed or the attempt gave up. */
  ms: number;
  ok: boolean;
  error?: string;
  /** The client's source port, when the prober could read it. */
  localPort?: number;
}

export interface AppliedRevision {
  rev: number;
  allowed: ReadonlySet<Pair>;
  /** Epoch ms: the `lab apply` started (the initial `lab up`: -Infinity). */
  start: number;
  /** Epoch ms: the apply succeeded (agents report it in force); undefined when it failed or was killed. */
  end?: number;
}

export interface TamperWindow {
  /** Servers (`app/s0`) whose ingress policy lives on the tampered node. */
  servers: ReadonlySet<string>;
  start: number;
  end: number;
}

export interface Verdicts {
  mustFail: number;
  mustSucceed: number;
  /** Connections made on pairs every possibly-in-force revision denies. */
  falsePasses: ProbeRecord[];
  /** Connections that failed on pairs allowed by the one settled revision in force. */
  falseDrops: ProbeRecord[];
  /** Neither: a transition, a settle, or a tamper window. */
  unjudged: number;
}

export interface ModelOptions {
  settleMs: number;
  /** Widens every interval, for clock reads that are a few ms apart. */
  slackMs: number;
}

interface Interval {
  rev: AppliedRevision;
  from: number;
  until: number;
}

/** Each revision's possibly-in-force interval; `revisions` in the order they were applied. */
export function inForceIntervals(revisions: readonly AppliedRevision[]): Interval[] {
  return revisions.map((rev, i) => {
    const replacedBy = revisions.slice(i + 1).find((r) => r.end !== undefined);
    return { rev, from: rev.start, until: replacedBy?.end ?? Infinity };
  });
}

export function judge(
  records: readonly ProbeRecord[],
  revisions: readonly AppliedRevision[],
  tampers: readonly TamperWindow[],
  opts: ModelOptions,
): Verdicts {
  const intervals = inForceIntervals(revisions);
  const out: Verdicts = { mustFail: 0, mustSucceed: 0, falsePasses: [], falseDrops: [], unjudged: 0 };
  for (const r of records) {
    const from = r.t - opts.slackMs;
    const until = r.t + r.ms + opts.slackMs;
    const tampered = tampers.some((w) => w.servers.has(r.server) && w.start <= until && from <= w.end);
    if (tampered) {
      out.unjudged += 1;
      continue;
    }
    const live = intervals.filter((i) => i.from <= until && from <= i.until);
    if (live.every((i) => !i.rev.allowed.has(r.pair))) {
      out.mustFail += 1;
      if (r.ok) out.falsePasses.push(r);
      continue;
    }
    const only = live.length === 1 ? live[0] : undefined;
    const settledSince = only?.rev.end === undefined ? undefined : only.rev.end + opts.settleMs;
    if (only && settledSince !== undefined && r.t >= settledSince && only.rev.allowed.has(r.pair)) {
      out.mustSucceed += 1;
      if (!r.ok) out.falseDrops.push(r);
      continue;
    }
    out.unjudged += 1;
  }
  return out;
}
