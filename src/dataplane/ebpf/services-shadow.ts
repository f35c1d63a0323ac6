/**
 * The backend's shadow of the scope's service maps: what its own syncs wrote there (the planner's
 * ServiceState) and the content sums of both maps (content-sum.ts), kept up to date by the writes
 * themselves. The maps are shared by every node's agent of the scope, so a shadow is only
 * trusted while the digest the last writer recorded (map-contents.ts) is the one it computes:
 * see services.ts.
 */
import type { Codec } from '../../bpf/index.js';
import { ContentSum, TypedContentSum } from './content-sum.js';
import {
  backendKey,
  backendValue,
  svcKey,
  svcValue,
  type BackendKey,
  type BackendValue,
  type SvcKey,
  type SvcValue,
} from './services-layout.js';
import {
  advanceServiceState,
  emptyServiceState,
  readServices,
  serviceState,
  visitPlanElements,
  type ServiceMaps,
  type ServiceDelta,
  type ServiceState,
  type ServiceSyncPlan,
} from './services-sync.js';

/**
 * How the maps encode their elements, which the sums are over: the scope's service maps hold
 * 16-byte addresses, a node's node-port maps 4-byte ones (nodeport-layout.ts).
 */
export interface ServiceMapLayout {
  svcKey: Codec<SvcKey>;
  svcValue: Codec<SvcValue>;
  backendKey: Codec<BackendKey>;
  backendValue: Codec<BackendValue>;
}

export const SERVICE_MAP_LAYOUT: ServiceMapLayout = { svcKey, svcValue, backendKey, backendValue };

export interface ServicesShadow {
  layout: ServiceMapLayout;
  state: ServiceState;
  services: ContentSum;
  backends: ContentSum;
  /** Elements in both maps (counted by the writes, not by walking the state). */
  elements: number;
}

export function emptyServicesShadow(layout: ServiceMapLayout = SERVICE_MAP_LAYOUT): ServicesShadow {
  return {
    layout,
    state: emptyServiceState(),
    services: new ContentSum(),
    backends: new ContentSum(),
    elements: 0,
  };
}

/** The sums of both maps once `plan` is written (the shadow itself is left as it is). */
export function sumsAfter(
  shadow: ServicesShadow,
  plan: ServiceSyncPlan,
): { services: ContentSum; backends: ContentSum; elements: number } {
  const { layout } = shadow;
  const services = new TypedContentSum<SvcKey, SvcValue>(
    layout.svcKey,
    layout.svcValue,
    shadow.services.copy(),
  );
  const backends = new TypedContentSum<BackendKey, BackendValue>(
    layout.backendKey,
    layout.backendValue,
    shadow.backends.copy(),
  );
  let elements = shadow.elements;
  const count = (before: unknown, after: unknown): void => {
    if (before === undefined && after !== undefined) elements++;
    else if (before !== undefined && after === undefined) elements--;
  };
  visitPlanElements(shadow.state, plan, {
    service(key, before, after) {
      if (before) services.remove(key, before);
      if (after) services.add(key, after);
      count(before, after);
    },
    backend(key, before, after) {
      if (before) backends.remove(key, before);
      if (after) backends.add(key, after);
      count(before, after);
    },
  });
  return { services: services.sum, backends: backends.sum, elements };
}

/** After `plan` was written: the shadow holds what the maps hold. */
export function advanceServicesShadow(shadow: ServicesShadow, plan: ServiceDelta): void {
  const sums = sumsAfter(shadow, plan);
  advanceServiceState(shadow.state, plan);
  shadow.services = sums.services;
  shadow.backends = sums.backends;
  shadow.elements = sums.elements;
}

/** One read of the kernel: the shadow of maps nobody kept one of (agent restart, repair, other writer). */
export function readServicesShadow(
  maps: ServiceMaps,
  layout: ServiceMapLayout = SERVICE_MAP_LAYOUT,
): ServicesShadow {
  const current = readServices(maps);
  const shadow = emptyServicesShadow(layout);
  shadow.state = serviceState(current);
  const services = new TypedContentSum(layout.svcKey, layout.svcValue, shadow.services);
  for (const [k, v] of current.services) services.add(k, v);
  const backends = new TypedContentSum(layout.backendKey, layout.backendValue, shadow.backends);
  for (const [k, v] of current.backends) backends.add(k, v);
  shadow.elements = current.services.length + current.backends.length;
  return shadow;
}
