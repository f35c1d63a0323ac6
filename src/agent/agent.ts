/**
 * One node's agent: keeps the kernel equal to the desired state.
 *
 *   start:    adopt what a previous agent left (same IR, same kernel fingerprint → touch nothing),
 *             else apply the difference, else apply everything;
 *   changes:  the source is watched and changes are applied incrementally: the first change of a
 *             quiet period at once when the source says it is complete (a file renamed into
 *             place, an etcd event), the rest of a burst coalesced by the debounce;
 *   drift:    every `reconcileMs` the kernel's fingerprint is compared with the one recorded after
 *             the last apply; a difference is repaired with a full apply and counted.
 *   read-back: an incremental apply of the agent's own (the backend diffed it against its shadow
 *             of what it wrote) is in force when the kernel write returns: the kernel is not read
 *             back then. Its fingerprint is read once changes pause (READ_BACK_QUIET_MS) or at the
 *             next drift check, and only then becomes the reference and goes to applied.json. A
 *             kernel change event not of our own applies while that read is due means the kernel
 *             may hold someone else's change too: a repair, not the new reference.
 *
 * All kernel work runs one job at a time. On stop the dataplane stays in force (that is the
 * point); `uninstall()` is what removes it.
 */
import { tableModeSummary } from '../ir/decision-table.js';
import { localEndpointIds } from '../ir/slice.js';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import {
  isDeterministicFailure,
  inconsistency,
  type Backend,
  type ChangeWatch,
  type NodeTarget,
} from '../dataplane/backend.js';
import { isEmptyDelta, type IdChanges, type IrChange } from '../ir/delta.js';
import { irForNode } from '../ir/slice.js';
import type { IR } from '../ir/types.js';
import { errorMessage } from '../util/errors.js';
import type { AgentError, AgentStatus, ApplyPhases, LastApply } from './api-types.js';
import type { DesiredSource, DesiredState } from './desired.js';
import { forgetApplied, readApplied, writeApplied, type AppliedRecord } from './store.js';
import { MemoryKeeper, optimizeBulkWork } from './memory.js';

/** Drift polls use at most 1/POLL_DUTY of a core. */
const POLL_DUTY = 20;
/** The longest pause between two checks of what change events miss (ipset members). */
const UNWATCHED_MAX_PAUSE_MS = 750;

/** Failed applies are retried after RETRY_MIN_MS, doubling up to RETRY_MAX_MS. */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;

/** Ruleset events this soon after an apply are taken as the apply's own. */
const OWN_CHANGES_MS = 200;

/** The kernel is read back after an incremental apply once changes pause this long. */
const READ_BACK_QUIET_MS = 1000;
/** How long the source stays quiet before a notice counts as a new change, not a burst's rest. */
export const DEBOUNCE_MS = 20;

/**
 * The heap is compacted this long after the first sync: once start() has returned and the API
 * answers (the flow sources start in between), not before it.
 */
const START_COMPACT_DELAY_MS = 1000;

/** A drift poll's or a scrape's growth is looked at this long after it (agent/memory.ts). */
const MEMORY_LOOK_AFTER_MS = 1000;

// The status the agent keeps is exactly what its API serves: one definition, in api-types.
export type ApplyMode = LastApply['mode'];
/** deterministic: the same input would fail the same way (see isDeterministicFailure). */
type ApplyOutcome = 'applied' | 'transient' | 'deterministic';
export type { AgentError, AgentStatus };

export interface AgentHooks {
  onApplied?(mode: ApplyMode, seconds: number, desired: DesiredState): void;
  onRepair?(): void;
  onError?(stage: AgentError['stage']): void;
}

export interface AgentOptions {
  target: NodeTarget;
  backend: Backend;
  source: DesiredSource;
  stateDir: string;
  logger: Logger;
  reconcileMs?: number;
  debounceMs?: number;
  hooks?: AgentHooks;
  /** The pods' cgroups (pod id → cgroup v2 directory); default DesiredState.cgroups. */
  podCgroups?: (desired: DesiredState) => Readonly<Record<string, string>>;
}

export class Agent {
  readonly status: AgentStatus;
  private applied: AppliedRecord | undefined;
  private desired: DesiredState | undefined;
  private queue: Promise<void> = Promise.resolve();
  /** Jobs of the queue started so far, and whether one runs now (a reading taken outside the queue checks these). */
  private jobsStarted = 0;
  private jobRunning = false;
  private stopWatch: (() => void) | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  /** When the source last said it changed (the debounce's quiet period runs from there). */
  private lastNotice = Number.NEGATIVE_INFINITY;
  private driftTimer: NodeJS.Timeout | undefined;
  private unwatchedTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = 0;
  private kernelWatch: ChangeWatch | undefined;
  /** A revision whose apply fails deterministically: not tried again until the revision changes. */
  private failedRevision: string | undefined;
  /**
   * The kernel's fingerprint after a failed repair, and when to try that repair again (never, for
   * a deterministic failure, until the kernel or the desired state changes).
   */
  private unrepaired: { fingerprint: string; retryAt: number; backoffMs: number } | undefined;
  private applying = false;
  private appliedAt = Number.NEGATIVE_INFINITY;
  /**
   * The backend's shadow holds what this agent applied last (a successful apply in this process):
   * the next change is diffed against it without reading the kernel first.
   */
  private ownShadow = false;
  /**
   * An incremental apply of ours is in force but the kernel has not been read since: the
   * recorded fingerprint is the one before it, applied.json the state before it.
   */
  private readBackDue = false;
  /**
   * While a read-back is due, the part of the kernel the events miss (unwatched) as our apply left
   * it, read right after the apply: a change there before the read-back is not taken as ours.
   */
  private unwatchedAfterApply: string | undefined;
  /** A kernel change event that none of our applies explains arrived since the last check. */
  private foreignChange = false;
  /**
   * The record in memory (a read-back adopted while changes were still coming) is newer than
   * applied.json: written once changes pause, or on stop.
   */
  private persistDue = false;
  private readBackTimer: NodeJS.Timeout | undefined;
  private compactTimer: NodeJS.Timeout | undefined;
  /** Counts scheduled read-backs: a queued one that a later apply rescheduled is skipped. */
  private readBackSeq = 0;
  private stopped = false;
  private readonly log: Logger;
  private readonly memory: MemoryKeeper;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.logger;
    this.memory = new MemoryKeeper({
      lookAfterMs: MEMORY_LOOK_AFTER_MS,
      schedule: () =>
        void this.enqueue(async () => {
          // Changes are coming: their read-back compacts once they pause, not one in between.
          if (this.stopped || this.readBackTimer !== undefined) this.memory.skipped();
          else this.giveMemoryBack();
        }),
      changed: (state) => (this.status.memory = state),
    });
    this.status = {
      node: opts.target.node,
      backend: opts.backend.name,
      netns: opts.target.netns,
      scope: opts.target.scope,
      pid: process.pid,
      source: opts.source.description,
      ...(opts.source.stats ? { sourceStats: opts.source.stats } : {}),
      startedAt: new Date().toISOString(),
      repairs: 0,
      errors: 0,
      memory: this.memory.state,
    };
  }

  /** Work outside the queue that allocates (a scrape reads the kernel's counters) began. */
  workStarted(): void {
    this.memory.started();
  }

  /** That work ended: its garbage goes back once it is over (agent/memory.ts). */
  workEnded(): void {
    if (!this.stopped) this.memory.ended();
  }

  get target(): NodeTarget {
    return this.opts.target;
  }

  /** The desired state last read (even when it could not be applied). */
  get desiredState(): DesiredState | undefined {
    return this.desired;
  }

  /** The IR in force. */
  get appliedIR(): IR | undefined {
    return this.applied?.ir;
  }

  /** Runs `job` after every job queued before it; errors are the job's own business. */
  private enqueue(job: () => Promise<void>): Promise<void> {
    const run = async (): Promise<void> => {
      this.jobsStarted++;
      this.jobRunning = true;
      try {
        await job();
      } finally {
        this.jobRunning = false;
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async start(): Promise<void> {
    const recorded = readApplied(this.opts.stateDir);
    if (
      recorded &&
      recorded.backend === this.opts.backend.name &&
      recorded.node === this.opts.target.node &&
      recorded.netns === this.opts.target.netns
    )
      this.applied = recorded;
    await this.enqueue(() => this.sync(true));
    this.stopWatch = this.opts.source.watch((complete) => this.changed(complete));
    try {
      this.kernelWatch = await this.opts.backend.watchChanges(this.opts.target, () => this.kernelChanged());
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'no change events from the kernel: polling only');
    }
    // With change events, polls only catch what the events cannot show; without, the backend says
    // how often reading its state back is worth it.
    const every = this.opts.reconcileMs ?? (this.kernelWatch ? 1000 : this.opts.backend.driftPollMs);
    this.schedulePoll(every);
    const unwatched = this.polledUnwatched();
    if (unwatched) this.scheduleUnwatchedPoll(unwatched);
  }

  /** The part of the kernel the events miss, when this agent polls it on its own. */
  private polledUnwatched(): ChangeWatch['unwatched'] {
    return this.opts.reconcileMs === undefined ? this.kernelWatch?.unwatched : undefined;
  }

  /** What the unwatched part should read now: as our last apply left it. */
  private expectedUnwatched(u: NonNullable<ChangeWatch['unwatched']>): string | undefined {
    if (this.readBackDue) return this.unwatchedAfterApply;
    return this.applied && u.partOf(this.applied.fingerprint);
  }

  /**
   * The part of the kernel the change events miss, read on its own and often (it is cheap); a
   * difference runs the full drift check, which repairs. The same duty limit as the full poll.
   */
  private scheduleUnwatchedPoll(u: NonNullable<ChangeWatch['unwatched']>, delay = u.everyMs): void {
    if (this.stopped) return;
    this.unwatchedTimer = setTimeout(() => void this.pollUnwatched(u), delay);
  }

  /**
   * The read runs outside the queue, so a change never waits behind it (listing thousands of sets
   * takes 60–330 ms at 10k endpoints, four times a second); only the comparison is queued. A
   * reading that overlapped a job of the queue (an apply may have changed the sets meanwhile)
   * says nothing and is dropped: the next poll reads again.
   */
  private async pollUnwatched(u: NonNullable<ChangeWatch['unwatched']>): Promise<void> {
    const quietAt = this.jobRunning ? undefined : this.jobsStarted;
    const started = performance.now();
    const reading = quietAt === undefined ? undefined : await u.read().catch(() => undefined);
    const took = performance.now() - started;
    await this.enqueue(async () => {
      // This job is the only one started since the read began.
      const undisturbed = quietAt !== undefined && this.jobsStarted === quietAt + 1;
      if (undisturbed) {
        // While a read-back is due the recorded fingerprint is the one before our last apply: the
        // part read right after that apply is the comparison (the read-back would adopt a change).
        const expected = this.expectedUnwatched(u);
        const same = this.applied === undefined || (expected !== undefined && expected === reading);
        if (!same && !this.stopped) await this.checkDrift();
      }
      // The pause follows what the read cost, not a repair it led to (that is no polling cost).
      // The read is cheap by design (one small read): its wall time on a loaded machine, or while
      // a new agent starts its tracers, says little about its cost, and pausing 20× that (seconds)
      // would leave a changed set member unrepaired that long. Bounded, it stays within 1 s.
      this.scheduleUnwatchedPoll(
        u,
        undisturbed ? Math.min(UNWATCHED_MAX_PAUSE_MS, Math.max(u.everyMs, took * POLL_DUTY)) : u.everyMs,
      );
    });
  }

  /**
   * The next drift poll. Reading a big ruleset back costs more: the pause after a poll is at least
   * POLL_DUTY times what the poll took, so checking never takes more than 1/POLL_DUTY of a core.
   */
  private schedulePoll(every: number, delay = every): void {
    if (this.stopped) return;
    this.reconcileTimer = setTimeout(() => {
      void this.enqueue(async () => {
        const readMs = await this.checkDrift();
        this.schedulePoll(every, Math.max(every, readMs * POLL_DUTY));
      });
    }, delay);
  }

  private kernelChanged(): void {
    if (this.stopped) return;
    // Our own applies show up here too: events during one, or just after it (the monitor is a
    // separate process), are ours, but someone else's may be among them: check once the window
    // is over (a check reads the kernel, so checking late misses nothing).
    const sinceApply = performance.now() - this.appliedAt;
    if (!this.applying && sinceApply >= OWN_CHANGES_MS) this.foreignChange = true;
    const delay = this.applying ? OWN_CHANGES_MS : Math.max(30, OWN_CHANGES_MS - sinceApply);
    clearTimeout(this.driftTimer);
    this.driftTimer = setTimeout(
      () =>
        void this.enqueue(async () => {
          // Only our own incremental apply's events: its read-back, once changes pause, is the
          // check (reading a large nftables table takes seconds; not after every change).
          if (this.readBackDue && !this.foreignChange) return;
          await this.checkDrift();
        }),
      delay,
    );
  }

  /**
   * The source may have changed. `complete`: what changed is whole (a file renamed into place, an
   * etcd event), so the first change after a quiet period is read at once, without waiting out the
   * debounce; anything else (a file written in place, a poll) and the rest of a burst wait until
   * the source has been quiet for the debounce period, and are read once.
   */
  private changed(complete = false): void {
    if (this.stopped) return;
    const now = performance.now();
    const debounceMs = this.opts.debounceMs ?? DEBOUNCE_MS;
    const quiet = this.debounceTimer === undefined && now - this.lastNotice >= debounceMs;
    this.lastNotice = now;
    if (complete && quiet) {
      void this.enqueue(() => this.sync(false));
      return;
    }
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      void this.enqueue(() => this.sync(false));
    }, debounceMs);
  }

  /** Re-reads the source now (the API's `sync`). */
  syncNow(): Promise<void> {
    return this.enqueue(() => this.sync(false));
  }

  /**
   * Records and logs a failure, once: the same failure again (same stage, revision and message,
   * e.g. each retry of a missing interface) is logged at debug level only and not counted again.
   */
  private fail(
    stage: AgentError['stage'],
    message: string,
    revision?: string,
    retry?: AgentError['retry'],
  ): void {
    const last = this.status.lastError;
    const again = last?.stage === stage && last.revision === revision && last.message === message;
    this.status.lastError = {
      at: new Date().toISOString(),
      stage,
      ...(revision ? { revision } : {}),
      message,
      ...(retry ? { retry } : {}),
    };
    if (again) {
      this.log.debug({ stage, revision }, `again: ${message.split('\n')[0] ?? ''}`);
      return;
    }
    this.status.errors++;
    this.opts.hooks?.onError?.(stage);
    this.log.error({ stage, revision, ...(retry ? { retry } : {}) }, message);
  }

  private async sync(starting: boolean): Promise<void> {
    if (this.stopped) return;
    const started = performance.now();
    let desired: DesiredState;
    try {
      desired = await this.opts.source.read();
    } catch (e) {
      this.fail('source', errorMessage(e));
      return;
    }
    const read = performance.now();
    this.desired = withoutChange(desired);
    this.status.desiredRevision = desired.revision;
    // It failed in a way that does not go away by trying again: wait for a new revision.
    if (desired.revision === this.failedRevision) return;
    this.failedRevision = undefined;
    const node = this.opts.target.node;
    if (!desired.ir.nodes.some((n) => n.name === node)) {
      this.fail(
        'source',
        `node '${node}' is not in the desired state (nodes: ${desired.ir.nodes.map((n) => n.name).join(', ')})`,
      );
      return;
    }
    const applied = this.applied;
    const sameState = applied !== undefined && sameSlice(applied.ir, desired, node);
    if (!starting && sameState && applied) {
      // The IR in force stays the one the kernel was built from (the desired one may hold sets
      // this node never installed): the next incremental apply diffs against what is there.
      if (applied.revision !== desired.revision)
        this.record({ ...desired, ir: applied.ir }, applied.fingerprint, !this.readBackDue);
      this.status.revision = desired.revision;
      delete this.status.lastError;
      return;
    }
    const compared = performance.now();
    const phases = { source: compared === read ? 0 : read - started, compare: compared - read };
    let mode: ApplyMode;
    if (!applied) mode = 'full';
    // Our own apply is what the kernel holds (no event says otherwise): the backend diffs against
    // its shadow of it; a change behind our back since is the drift check's to find and repair.
    else if (!starting && this.ownShadow && !this.foreignChange) mode = 'incremental';
    else {
      let fingerprint: string | undefined;
      try {
        fingerprint = await this.opts.backend.fingerprint(this.opts.target);
      } catch (e) {
        this.log.warn({ err: errorMessage(e) }, 'cannot read the dataplane; applying everything');
      }
      const untouched =
        !this.readBackDue && fingerprint === applied.fingerprint && !inconsistency(fingerprint);
      // The read covers every change event before it.
      if (untouched) this.foreignChange = false;
      mode = !untouched ? 'full' : sameState ? 'adopted' : 'incremental';
    }
    // A full apply touches every object: optimized code pays for itself there, not in a change.
    if (mode === 'full') optimizeBulkWork(true);
    const outcome = await this.apply(desired, mode, phases);
    // A full apply (the first sync, a repair) allocated as much as the whole IR: give it back.
    // The first sync's once the agent is up: the compaction holds the event loop (0.75 s at 50k
    // endpoints), and the API opens after the first sync.
    if (mode === 'full' && starting) this.compactAfterStart();
    else if (mode === 'full') void this.enqueue(async () => this.bulkWorkDone());
    if (outcome === 'applied') this.retryMs = 0;
    else if (outcome === 'deterministic') this.failedRevision = desired.revision;
    else this.retryLater();
  }

  /**
   * A failed apply is tried again, backing off: what made it fail (an interface not created yet,
   * a busy lock) often goes away without a new desired state to wake the agent.
   */
  private retryLater(): void {
    if (this.stopped) return;
    this.retryMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.retryMs * 2));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.changed(), this.retryMs);
  }

  private async apply(
    desired: DesiredState,
    mode: ApplyMode,
    phases?: Pick<ApplyPhases, 'source' | 'compare'>,
  ): Promise<ApplyOutcome> {
    this.applying = true;
    try {
      return await this.applyNow(desired, mode, phases ?? { source: 0, compare: 0 });
    } finally {
      this.applying = false;
      this.appliedAt = performance.now();
    }
  }

  private async applyNow(
    desired: DesiredState,
    mode: ApplyMode,
    before: Pick<ApplyPhases, 'source' | 'compare'>,
  ): Promise<ApplyOutcome> {
    const started = performance.now();
    let changed = 0;
    if (mode !== 'adopted') {
      try {
        if (mode === 'repair' || mode === 'full') {
          // The kernel is not what the backend last wrote (drift), or not known: it reads it again.
          this.opts.backend.dropShadow(this.opts.target);
          await this.opts.backend.prepareRepair(this.opts.target);
        }
        const previous = mode === 'incremental' ? this.applied?.ir : undefined;
        const podCgroups = this.opts.podCgroups?.(desired) ?? desired.cgroups;
        const target = podCgroups ? { ...this.opts.target, podCgroups } : this.opts.target;
        // The source's delta, when it starts from the IR in force: the backend applies just that.
        const change = changeFrom(desired, previous);
        const r = await this.opts.backend.apply(target, desired.ir, previous, change);
        changed = r.changed.length;
      } catch (e) {
        this.opts.backend.dropShadow(this.opts.target);
        this.ownShadow = false;
        const outcome = isDeterministicFailure(e) ? 'deterministic' : 'transient';
        const retry = outcome === 'deterministic' ? 'on-change' : 'backoff';
        this.fail(mode === 'repair' ? 'drift' : 'apply', errorMessage(e), desired.revision, retry);
        return outcome;
      }
    }
    const written = performance.now();
    if (mode !== 'adopted') this.ownShadow = true;
    // An incremental apply wrote what the backend's shadow says, onto a kernel known to hold our
    // previous apply: reading it back is left to the drift check (scheduleReadBack).
    const readBack = mode === 'incremental' && this.applied !== undefined;
    let fingerprint: string;
    try {
      // Adopting: sync has just found the kernel equal to the recorded fingerprint, which stays the
      // reference; reading again would let a change made since then become it.
      fingerprint =
        (mode === 'adopted' || readBack) && this.applied
          ? this.applied.fingerprint
          : await this.opts.backend.fingerprint(this.opts.target);
    } catch (e) {
      this.fail('drift', `applied, but cannot read the dataplane back: ${errorMessage(e)}`, desired.revision);
      return 'transient';
    }
    const read = performance.now();
    // Adopting keeps the IR the kernel was built from (see sync: equal slices, not equal IRs).
    const inForce = mode === 'adopted' && this.applied ? { ...desired, ir: this.applied.ir } : desired;
    this.readBackDue = readBack;
    if (readBack) this.scheduleReadBack();
    else this.foreignChange = false;
    this.record(inForce, fingerprint, !readBack);
    const recorded = performance.now();
    const broken = inconsistency(fingerprint);
    if (broken !== undefined && mode !== 'repair') {
      // Someone changed the kernel between the apply and the read: the next check repairs it.
      this.log.warn({ revision: desired.revision, broken }, 'the dataplane changed during the apply');
      this.kernelChanged();
    }
    const durationMs = Math.round(performance.now() - started);
    const ms = (t: number): number => Math.round(t * 10) / 10;
    this.status.lastApply = {
      at: new Date().toISOString(),
      mode,
      durationMs,
      changed,
      revision: desired.revision,
      phasesMs: {
        source: ms(before.source),
        compare: ms(before.compare),
        apply: ms(written - started),
        fingerprint: ms(read - written),
        record: ms(recorded - read),
      },
    };
    if (!readBack) this.status.checkedAt = this.status.lastApply.at;
    const local = localEndpointIds(inForce.ir, this.opts.target.node);
    this.status.policy = tableModeSummary(
      inForce.ir.ruleSets.filter((rs) => local.has(rs.endpoint)),
      inForce.ir.policyMode ?? 'walk',
    );
    delete this.status.lastError;
    this.opts.hooks?.onApplied?.(mode, durationMs / 1000, desired);
    this.unrepaired = undefined;
    this.log.info(
      { mode, revision: desired.revision, durationMs, changed, phasesMs: this.status.lastApply.phasesMs },
      `dataplane ${mode === 'adopted' ? 'adopted as is' : 'applied'}`,
    );
    // After the report (an `ipset list` at 10k endpoints takes tens of milliseconds, and the apply
    // is in force already) but in the same queued job, so nothing checks the kernel in between.
    const unwatched = this.polledUnwatched();
    if (readBack && unwatched)
      this.unwatchedAfterApply = await (unwatched.readAfterApply ?? unwatched.read)().catch(() => undefined);
    return 'applied';
  }

  /**
   * Keeps what is in force; `persist`: also in applied.json, which must pair an IR with the
   * fingerprint read from the kernel holding it (a restart adopts by it), so a state whose
   * read-back is due stays in memory until the read-back (or stop) writes it.
   */
  private record(desired: DesiredState, fingerprint: string, persist = true): void {
    const t = this.opts.target;
    this.applied = {
      version: 1,
      node: t.node,
      netns: t.netns,
      scope: t.scope,
      backend: this.opts.backend.name,
      revision: desired.revision,
      fingerprint,
      appliedAt: new Date().toISOString(),
      ir: desired.ir,
    };
    this.status.revision = desired.revision;
    if (persist) {
      writeApplied(this.opts.stateDir, this.applied);
      this.persistDue = false;
    }
  }

  /**
   * The first sync's garbage goes back START_COMPACT_DELAY_MS after it, in the queue (after a
   * change that came meanwhile): by then start() has returned and the API answers.
   */
  private compactAfterStart(): void {
    clearTimeout(this.compactTimer);
    this.compactTimer = setTimeout(() => {
      this.compactTimer = undefined;
      if (!this.stopped) void this.enqueue(async () => this.bulkWorkDone());
    }, START_COMPACT_DELAY_MS);
  }

  /** After a full sync: its garbage goes back, and changes run without the optimizing compiler. */
  private bulkWorkDone(): void {
    this.giveMemoryBack();
    optimizeBulkWork(false);
  }

  private giveMemoryBack(): void {
    const done = this.memory.compact();
    if (done) this.log.debug(done, 'heap compacted');
  }

  /** The read-back of an incremental apply, once changes pause (a new apply postpones it). */
  private scheduleReadBack(): void {
    clearTimeout(this.readBackTimer);
    if (this.stopped) return;
    const seq = ++this.readBackSeq;
    this.readBackTimer = setTimeout(() => {
      // Changes have paused: the read-back below writes applied.json.
      this.readBackTimer = undefined;
      void this.enqueue(async () => {
        // The timer can fire while a change's sync is running or queued: once that applies, changes
        // have not paused (it scheduled a read-back of its own). Read now, and the next change,
        // written right after this one is in force, would wait the whole read (2–8 s for
        // iptables-save at 10k services) and fire the next stale read-back in turn.
        if (seq !== this.readBackSeq) return;
        if (this.readBackDue) await this.checkDrift();
        this.persistRecord();
        // Changes have paused: what the burst allocated goes back to the system.
        this.giveMemoryBack();
      });
    }, READ_BACK_QUIET_MS);
  }

  /** applied.json to the record in memory, when a read-back adopted during a burst left it behind. */
  private persistRecord(): void {
    // While a read-back is due the record pairs a newer IR with an older fingerprint: not that.
    if (!this.persistDue || this.readBackDue || !this.applied) return;
    this.persistDue = false;
    writeApplied(this.opts.stateDir, this.applied);
  }

  /**
   * The fingerprint read after our own incremental applies, now the reference (and applied.json);
   * false when a change event none of our applies explains came first: then the kernel may hold
   * that change too, and it is repaired rather than taken as the reference.
   */
  private adoptReadBack(applied: AppliedRecord, now: string, persist: boolean): boolean {
    if (this.foreignChange || inconsistency(now)) return false;
    // No event shows a change there: what our apply left is compared instead.
    const u = this.polledUnwatched();
    if (u && u.partOf(now) !== this.unwatchedAfterApply) return false;
    this.readBackDue = false;
    this.record({ revision: applied.revision, ir: applied.ir }, now, persist);
    if (!persist) this.persistDue = true;
    this.status.checkedAt = new Date().toISOString();
    return true;
  }

  /**
   * Reads the fingerprint back and repairs when it changed; returns how long the read took (the
   * cost a poll's pace follows: a repair after a tamper is no polling cost, and counting it would
   * hold the next check back for seconds).
   */
  private async checkDrift(): Promise<number> {
    const applied = this.applied;
    if (this.stopped || !applied) return 0;
    const started = performance.now();
    // Events from here on are seen by the next check; those before it, by this one.
    const foreign = this.foreignChange;
    this.foreignChange = false;
    let now: string;
    try {
      now = await this.opts.backend.fingerprint(this.opts.target);
    } catch (e) {
      this.foreignChange ||= foreign;
      this.fail('drift', `cannot read the dataplane: ${errorMessage(e)}`);
      return performance.now() - started;
    }
    const readMs = performance.now() - started;
    // A full read of a netfilter ruleset leaves tens of MiB of garbage; given back once it is over.
    this.memory.afterWork();
    // The read-back of our incremental apply: the reference, unless someone else may have
    // changed the kernel too (then the kernel may not hold our apply: repair).
    const readBack = this.readBackDue;
    if (readBack) {
      this.foreignChange ||= foreign;
      // A drift poll between changes of a burst: applied.json (megabytes of JSON at 10k
      // endpoints, tens of milliseconds) waits for the pause, not to hold up the next change.
      if (this.adoptReadBack(applied, now, this.readBackTimer === undefined)) return readMs;
      this.readBackDue = false;
      this.foreignChange = false;
    } else if (now === applied.fingerprint && !inconsistency(now)) {
      this.status.checkedAt = new Date().toISOString();
      return readMs;
    }
    // A repair failed on this very kernel state (an interface the lab deleted, say): it is tried
    // again backing off (RETRY_MIN_MS to RETRY_MAX_MS), a deterministic failure not before the
    // kernel or the desired state changes; the error was logged once.
    const failed = this.unrepaired;
    const sameState = failed?.fingerprint === now;
    if (sameState && performance.now() < failed.retryAt) return readMs;
    if (!sameState)
      this.log.warn({ revision: applied.revision }, 'the dataplane was changed behind the agent: repairing');
    const desired: DesiredState = { revision: applied.revision, ir: applied.ir };
    // Without the optimizing compiler: a repair reads no manifests, and its apply is the kernel's
    // time (bench agent at 10k endpoints on eBPF: 4.10 s with it, 3.85 s without; 5 MiB more RSS).
    let outcome = await this.apply(desired, 'repair');
    // The look after the read above fell inside the repair (an eBPF repair at 10k endpoints takes
    // ~4 s), before it had allocated much: without a look after it, an agent stayed at 190–280 MiB.
    this.memory.afterWork();
    const broken = this.applied && inconsistency(this.applied.fingerprint);
    if (outcome === 'applied' && !broken) {
      this.status.repairs++;
      this.opts.hooks?.onRepair?.();
      return readMs;
    }
    if (broken) {
      // Changed again during the repair, or an apply of ours leaves this state: back off.
      this.fail('drift', `the dataplane stays inconsistent after a repair: ${broken}`);
      outcome = 'transient';
    }
    const backoffMs = sameState ? Math.min(RETRY_MAX_MS, failed.backoffMs * 2) : RETRY_MIN_MS;
    this.unrepaired = {
      fingerprint: await this.opts.backend.fingerprint(this.opts.target).catch(() => now),
      retryAt: outcome === 'deterministic' ? Number.POSITIVE_INFINITY : performance.now() + backoffMs,
      backoffMs,
    };
    return readMs;
  }

  /** Stops watching and checking; the dataplane stays as it is. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopWatch?.();
    clearTimeout(this.reconcileTimer);
    clearTimeout(this.debounceTimer);
    clearTimeout(this.driftTimer);
    clearTimeout(this.unwatchedTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.readBackTimer);
    clearTimeout(this.compactTimer);
    this.memory.stop();
    this.kernelWatch?.stop();
    await this.queue;
    // What is in force goes to applied.json for the next agent to adopt: read back now if due (a
    // change behind our back since leaves the older record, and the next agent applies in full).
    const applied = this.applied;
    if (this.readBackDue && applied && !this.foreignChange) {
      const now = await this.opts.backend.fingerprint(this.opts.target).catch(() => undefined);
      if (now !== undefined) this.adoptReadBack(applied, now, true);
    }
    this.persistRecord();
  }

  /** Removes everything the backend installed for this node, and the record of it. */
  async uninstall(): Promise<void> {
    await this.stop();
    await this.opts.backend.remove(this.opts.target);
    forgetApplied(this.opts.stateDir);
    this.applied = undefined;
  }
}

/**
 * `desired` as the agent keeps it between reads: without the source's change, which this sync's
 * apply alone uses. The change names the IR it started from; kept, it held that IR alive while
 * the agent idled, and with it what a backend keeps per IR object (nftables at 10k endpoints: a
 * second rendering of every service chain, 8.5 MiB).
 */
function withoutChange(desired: DesiredState): DesiredState {
  if (desired.change === undefined) return desired;
  const { change: _applied, ...kept } = desired;
  return kept;
}

/** The source's change of `desired`, when it starts from `previous` (the IR in force). */
function changeFrom(desired: DesiredState, previous: IR | undefined): IrChange | undefined {
  return previous !== undefined && desired.change?.from === previous ? desired.change : undefined;
}

/**
 * Whether the node's slice of `desired` equals that of `applied`. From the source's delta when it
 * starts at `applied`: endpoints, services and nodes are in every node's slice whole, so a change
 * of any of them is a change of the slice, found without comparing the slices (10k endpoints and
 * services); nothing changed at all is the same slice. Otherwise the slices are compared.
 */
function sameSlice(applied: IR, desired: DesiredState, node: string): boolean {
  const change = changeFrom(desired, applied);
  if (change) {
    const d = change.delta;
    if (isEmptyDelta(d)) return true;
    const moved = (c: IdChanges): boolean => c.added.length + c.changed.length + c.removed.length > 0;
    if (d.nodes || moved(d.endpoints) || moved(d.services)) return false;
  }
  return isDeepStrictEqual(irForNode(applied, node), irForNode(desired.ir, node));
}
