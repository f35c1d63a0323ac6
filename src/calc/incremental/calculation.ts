/**
 * The calculation kept between changes: a model, its allocations and build options, the IR they
 * give, and `apply` to move them on by a few model changes.
 *
 * The contract with the backends is structural sharing: in the IR `apply` returns, every
 * Endpoint, IpSet, IpPortSet, RuleSet (with its decision table), ServicePortTable and Prefilter
 * that did not change is the *same object* as in the previous IR, and an array with no change at
 * all is the previous array. A backend can skip unchanged objects with `===` and do O(changed)
 * work; the returned `IrDelta` lists the ids that were added, changed or removed.
 *
 * The result always equals `buildIR(model, allocations, opts)` of the model after the changes
 * (deeply: test/unit/calc-incremental.test.ts checks random change sequences against it).
 */
import type { IR } from '../../ir/types.js';
import { applyModelChanges, type ModelChange } from '../../model/changes.js';
import type { Model } from '../../model/types.js';
import type { Allocations } from '../allocate.js';
import type { BuildOptions } from '../api.js';
import { buildIR } from '../build.js';
import { isEmptyDelta, shareUnchanged, type IrDelta } from './delta.js';

export class IncrementalCalculation {
  private current: IR;
  private currentModel: Model;
  private currentAllocations: Allocations;

  constructor(
    model: Model,
    allocations: Allocations,
    private readonly opts: BuildOptions = {},
  ) {
    this.currentModel = model;
    this.currentAllocations = allocations;
    this.current = buildIR(model, allocations, opts);
  }

  /** The IR in force: equal to buildIR of `model` with `allocations` and the options. */
  get ir(): IR {
    return this.current;
  }

  get model(): Model {
    return this.currentModel;
  }

  get allocations(): Allocations {
    return this.currentAllocations;
  }

  /**
   * Applies `changes` in order (and the allocations after them, when they moved: a new pod needs
   * its address). Throws like buildIR (MissingAllocationError) and then keeps the previous state.
   */
  apply(changes: readonly ModelChange[], allocations?: Allocations): { ir: IR; delta: IrDelta } {
    const model = applyModelChanges(this.currentModel, changes);
    const nextAllocations = allocations ?? this.currentAllocations;
    const result = shareUnchanged(this.current, buildIR(model, nextAllocations, this.opts));
    this.currentModel = model;
    this.currentAllocations = nextAllocations;
    // Nothing changed: the IR in force stays the very same object.
    if (!isEmptyDelta(result.delta)) this.current = result.ir;
    return { ir: this.current, delta: result.delta };
  }
}
