/**
 * What changed between two IRs, by id: what the incremental calculation reports with every IR it
 * hands on, so that a backend can do work in proportion to the change instead of walking the
 * whole IR to find it (the calculation already knows).
 */
import type { IR, ServicePortTable } from './types.js';

/** Ids of one kind of IR object that were added, changed or removed, each sorted. */
export interface IdChanges {
  added: string[];
  changed: string[];
  removed: string[];
}

/**
 * The difference between the previous IR and the new one. Rule sets are named by
 * `ruleSetKey` (`<endpoint>/<direction>`), prefilters by name, services by their port table id.
 */
export interface IrDelta {
  endpoints: IdChanges;
  ipSets: IdChanges;
  ipPortSets: IdChanges;
  ruleSets: IdChanges;
  services: IdChanges;
  prefilters: IdChanges;
  /** The node list (or the policy mode) differs: everything that names nodes may have moved. */
  nodes: boolean;
}

/**
 * How an IR came from another one: `from` is the IR before (the very object), `delta` what
 * differs, `services` the added and changed service port tables by id (the objects of the new IR,
 * so the change can be applied without searching the new IR's 10k tables for them). Every object
 * not named in the delta is the same reference in both IRs.
 */
export interface IrChange {
  from: IR;
  delta: IrDelta;
  services: ReadonlyMap<string, ServicePortTable>;
}

/** True when the delta changes nothing. */
export function isEmptyDelta(delta: IrDelta): boolean {
  return (
    !delta.nodes &&
    [delta.endpoints, delta.ipSets, delta.ipPortSets, delta.ruleSets, delta.services, delta.prefilters].every(
      (c) => c.added.length + c.changed.length + c.removed.length === 0,
    )
  );
}

/** Whether nothing changed but (some of) the service tables. */
export function onlyServicesChanged(delta: IrDelta): boolean {
  return (
    !delta.nodes &&
    [delta.endpoints, delta.ipSets, delta.ipPortSets, delta.ruleSets, delta.prefilters].every(
      (c) => c.added.length + c.changed.length + c.removed.length === 0,
    )
  );
}
