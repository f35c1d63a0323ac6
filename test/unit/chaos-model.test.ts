/**
 * The chaos test's expectation model: which probed connections must fail, must succeed or are
 * not judged, around applies that succeed, are killed, and tampers.
 */
import { describe, expect, it } from 'vitest';
import { inForceIntervals, judge, type AppliedRevision, type ProbeRecord } from '../support/chaos-model.js';

const P = 'cli/c0→app/s0';
const opts = { settleMs: 500, slackMs: 20 };

function rec(t: number, ok: boolean, ms = 1): ProbeRecord {
  return { pair: P, server: 'app/s0', t, ms, ok };
}

// rev 0 denies P (in force until rev 1 ends at 2000); rev 1 allows it (applied 1000–2000);
// rev 2 denies it again but is killed at 3100; rev 3 denies it (applied 3100–4000).
const revisions: AppliedRevision[] = [
  { rev: 0, allowed: new Set(), start: -Infinity, end: 0 },
  { rev: 1, allowed: new Set([P]), start: 1000, end: 2000 },
  { rev: 2, allowed: new Set(), start: 3000 },
  { rev: 3, allowed: new Set(), start: 3100, end: 4000 },
];

describe('chaos expectation model', () => {
  it('a revision is possibly in force from its start until the next successful apply ends', () => {
    expect(inForceIntervals(revisions).map((i) => [i.rev.rev, i.from, i.until])).toEqual([
      [0, -Infinity, 2000],
      [1, 1000, 4000],
      [2, 3000, 4000],
      [3, 3100, Infinity],
    ]);
  });

  it('denied before and after: must fail; a connection then is a false pass', () => {
    const v = judge([rec(500, true), rec(600, false)], revisions, [], opts);
    expect(v.mustFail).toBe(2);
    expect(v.falsePasses).toEqual([rec(500, true)]);
  });

  it('during a transition that allows the pair: not judged either way', () => {
    const v = judge([rec(1500, true), rec(1600, false)], revisions, [], opts);
    expect(v).toMatchObject({ mustFail: 0, mustSucceed: 0, unjudged: 2 });
  });

  it('allowed and settled: must succeed; before the settle: not judged', () => {
    const v = judge([rec(2100, false), rec(2600, false), rec(2700, true)], revisions, [], opts);
    expect(v.mustSucceed).toBe(2);
    expect(v.falseDrops).toEqual([rec(2600, false)]);
    expect(v.unjudged).toBe(1);
  });

  it('a killed apply keeps the previous revision possibly in force until the next apply ends', () => {
    // rev 1 (allows) is live until 4000: no verdict at 3500, must fail after 4000.
    const v = judge([rec(3500, true), rec(4100, true)], revisions, [], opts);
    expect(v.unjudged).toBe(1);
    expect(v.falsePasses).toEqual([rec(4100, true)]);
  });

  it('a connection whose handshake ends inside an allowing window is not judged', () => {
    expect(judge([rec(900, true, 150)], revisions, [], opts).unjudged).toBe(1);
  });

  it("a tamper window on the server's node suspends both verdicts", () => {
    const tampers = [{ servers: new Set(['app/s0']), start: 400, end: 700 }];
    const v = judge([rec(500, true), rec(2600, false)], revisions, tampers, opts);
    expect(v.unjudged).toBe(1);
    expect(v.falsePasses).toEqual([]);
    expect(v.falseDrops).toEqual([rec(2600, false)]);
    const other = [{ servers: new Set(['app/s1']), start: 400, end: 700 }];
    expect(judge([rec(500, true)], revisions, other, opts).falsePasses).toHaveLength(1);
  });
});
