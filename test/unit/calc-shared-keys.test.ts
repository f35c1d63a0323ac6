/**
 * The incremental calculation keeps one copy of each service key for its own indexes: a slice
 * names its service by namespace and service name, and the key made from them each time used to
 * be kept by slicesByService and by every address the slice lists (two copies a service more; at
 * 10k services ~0.6 MiB). Copies are counted in a heap snapshot of the test's own process.
 */
import { describe, expect, it } from 'vitest';
import { allocate } from '../../src/calc/index.js';
import { IncrementalCalculation } from '../../src/calc/incremental/calculation.js';
import { modelOf, namespace, pod, service, type Manifest } from '../support/manifests.js';
import { stringCopies } from '../support/heap-snapshot.js';

const NS = 'shared-keys';
const SERVICES = 20;

function slice(name: string, addresses: readonly string[]): Manifest {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: addresses.map((a) => ({ addresses: [a] })),
  };
}

function cluster(): Manifest[] {
  const out: Manifest[] = [namespace(NS)];
  for (let i = 0; i < SERVICES; i++) {
    const name = `svc-${i}`;
    const addresses = [`198.18.7.${2 * i + 1}`, `198.18.7.${2 * i + 2}`];
    addresses.forEach((ip, j) => out.push(pod(NS, `${name}-p${j}`, { ip, node: 'node-1' })));
    out.push(service(NS, name, { ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
    out.push(slice(name, addresses));
  }
  return out;
}

/**
 * svc-3's slice, changed and applied: the tables changed. In a frame of its own, so that nothing
 * of the edit (the edited model, the apply's result) is alive when the heap is counted.
 */
function editSlice(calc: IncrementalCalculation): number {
  const edited = cluster().map((m) =>
    m.kind === 'EndpointSlice' && (m.metadata as { name: string }).name === 'svc-3-1'
      ? slice('svc-3', ['198.18.7.1', '198.18.7.8'])
      : m,
  );
  const moved = modelOf(edited).endpointSlices.find((sl) => sl.name === 'svc-3-1');
  if (!moved) throw new Error('a slice expected');
  return calc.apply([{ op: 'upsert', kind: 'endpointSlice', object: moved }]).delta.services.changed.length;
}

describe('incremental calculation, service keys', () => {
  it('keeps one copy of a service key in its indexes, however many addresses its slices list', async () => {
    const model = modelOf(cluster());
    const calc = new IncrementalCalculation(model, allocate(model));
    expect(calc.ir.services).toHaveLength(SERVICES);
    const copies = await stringCopies(() => Array.from({ length: SERVICES }, (_, i) => `${NS}/svc-${i}`));
    expect(copies.size).toBe(SERVICES);
    // The calculation's key (objects, sorted keys, tables, slices, addresses) and the one the
    // allocations and the IR's tables name the service by.
    for (const [key, n] of copies) expect({ key, copies: n }).toEqual({ key, copies: 2 });
    copies.clear(); // its keys are copies of the test's own

    // A slice that changes later names its service anew, as each change does.
    expect(editSlice(calc)).toBe(1);
    const after = await stringCopies(() => [`${NS}/svc-3`]);
    // The two as before (the service's new tables name it by the allocations' copy).
    expect(after.get(`${NS}/svc-3`)).toBe(2);
  });
});
