/** The eBPF backend's programs alone under BPF_PROG_TEST_RUN, and which backends a bench measures. */
import type { Program } from '../../../bpf/index.js';
import type { BackendName } from '../../../dataplane/backend.js';
import { closeNodeMaps, createNodeMaps, type MapSizes, type NodeMaps } from '../../../dataplane/ebpf/maps.js';
import { availableBackends } from '../../../dataplane/registry.js';

/**
 * Loads a program against a fresh set of the backend's maps (sized by `sizes`), hands it to
 * `use`, and closes program and maps after, whatever happens.
 */
export function withNodeProgram<T>(
  sizes: MapSizes,
  load: (maps: NodeMaps) => Program,
  use: (program: Program) => T,
): T {
  const maps = createNodeMaps(sizes);
  try {
    const program = load(maps);
    try {
      return use(program);
    } finally {
      program.close();
    }
  } finally {
    closeNodeMaps(maps);
  }
}

/** The backends of `order` the caller wants (all by default) that this build can load, in that order. */
export function measuredBackends(
  order: readonly BackendName[],
  wanted: readonly BackendName[] = order,
): BackendName[] {
  return order.filter((n) => wanted.includes(n) && availableBackends().includes(n));
}
