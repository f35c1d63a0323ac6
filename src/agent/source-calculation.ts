/**
 * The calculation a source keeps between reads: converted parts (a directory's files, etcd's
 * stored keys) in, the IR out. The first read, or one the incremental path cannot take, builds
 * from scratch; every later one turns the parts that changed into ModelChanges for the
 * IncrementalCalculation, re-validates the whole input only when a change can alter what the
 * checks across objects find, and allocates again only when a pod or service address can move.
 */
import {
  applyModelChanges,
  IncrementalCalculation,
  type Allocations,
  type BuildOptions,
} from '../calc/index.js';
import type { IrChange } from '../ir/delta.js';
import type { IR } from '../ir/types.js';
import { assembleModel, formatIssue, type ConvertedDocuments, type Model } from '../model/index.js';
import { SourceError } from './desired.js';
import { changesBetween, implicitNamespaceChange } from './model-changes.js';

/** What the calculation did, for status and tests. */
export type SourceCalculationStats = {
  /** Reads that built the IR from scratch (the first, or after a change the calculation refused). */
  fullBuilds: number;
  /** Reads turned into model changes for the incremental calculation. */
  incrementalBuilds: number;
  /** Model changes handed to the calculation so far. */
  modelChanges: number;
};

export interface SourceCalculationOptions {
  build: BuildOptions;
  /** The allocations of a model (a source may keep them, or derive them). */
  allocate(model: Model): Allocations;
  /** Starts the SourceError of an invalid input: `invalid manifests`. */
  invalid(): string;
}

export class SourceCalculation {
  readonly stats: SourceCalculationStats = { fullBuilds: 0, incrementalBuilds: 0, modelChanges: 0 };
  private calc: IncrementalCalculation | undefined;
  /** The parts behind the calculation's model. */
  private parts: ReadonlyMap<string, ConvertedDocuments> | undefined;

  constructor(private readonly opts: SourceCalculationOptions) {}

  /** The model of the IR last returned. */
  get model(): Model | undefined {
    return this.calc?.model;
  }

  /**
   * The IR of `parts` (part name → converted objects, in input order). `touched`, when the caller
   * knows it, names the parts that may have changed since the last call (others are not compared).
   * `change`: how it came from the IR the last call returned, when the calculation moved it on
   * incrementally (a backend applies just that); absent after a build from scratch.
   */
  build(
    parts: ReadonlyMap<string, ConvertedDocuments>,
    touched?: ReadonlySet<string>,
  ): { ir: IR; change?: IrChange } {
    const built = this.incremental(parts, touched) ?? { ir: this.full(parts) };
    this.parts = parts;
    return built;
  }

  /** Forgets the calculation: the next build is a full one (the allocations inputs changed). */
  reset(): void {
    this.calc = undefined;
    this.parts = undefined;
  }

  private assemble(parts: ReadonlyMap<string, ConvertedDocuments>): Model {
    const result = assembleModel([...parts.values()], [...parts.keys()]);
    if (!result.model)
      throw new SourceError(`${this.opts.invalid()}:\n${result.issues.map(formatIssue).join('\n')}`);
    return result.model;
  }

  private incremental(
    parts: ReadonlyMap<string, ConvertedDocuments>,
    touched: ReadonlySet<string> | undefined,
  ): { ir: IR; change: IrChange } | undefined {
    const calc = this.calc;
    const before = this.parts;
    if (!calc || !before) return undefined;
    const diff = changesBetween(before, parts, touched);
    let model: Model | undefined;
    // A part with issues, or objects added, removed or changed in what the checks across objects
    // read: validate the whole input. Otherwise the model stays valid as the last one was.
    if (diff.structural || [...parts.values()].some((p) => p.issues.length > 0)) {
      model = this.assemble(parts);
      diff.changes.push(...implicitNamespaceChange(calc.model, model));
    }
    try {
      const allocations = diff.movesAllocations
        ? this.opts.allocate(model ?? applyModelChanges(calc.model, diff.changes))
        : undefined;
      const from = calc.ir;
      const { ir, delta, services } = calc.apply(diff.changes, allocations);
      this.stats.incrementalBuilds++;
      this.stats.modelChanges += diff.changes.length;
      return { ir, change: { from, delta, services } };
    } catch {
      // The calculation kept its previous state: a full build reports the error if there is one.
      return undefined;
    }
  }

  private full(parts: ReadonlyMap<string, ConvertedDocuments>): IR {
    const model = this.assemble(parts);
    this.calc = new IncrementalCalculation(model, this.opts.allocate(model), this.opts.build);
    this.stats.fullBuilds++;
    return this.calc.ir;
  }
}
