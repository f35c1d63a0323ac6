/**
 * One node's policy programs loaded against fresh maps, filled as apply fills them (sets, counter
 * slots, decision tables), but attached nowhere: for BPF_PROG_TEST_RUN, where the differential
 * tests and the policy bench run crafted frames through exactly what apply would install.
 * update() moves to another IR the way apply does (stable numbers, contents by difference,
 * changed tables swapped in whole).
 */
import { Program, type TestRunResult } from '../../bpf/index.js';
import type { Direction, IR } from '../../ir/types.js';
import { SKB, TCX } from './layout.js';
import { closeNodeMaps, createNodeMaps, programMaps, type MapSizes, type NodeMaps } from './maps.js';
import { nodeView, type Allocation } from './node.js';
import { policyProgram } from './program.js';
import { addSetMembers, planSetSync, removeSetMembers } from './sync.js';
import {
  buildTables,
  allocateWithTables,
  dropTables,
  freedTableIndices,
  installTables,
  planTableWrites,
  type TableChoice,
  type TableState,
} from './tables.js';

/**
 * __sk_buff input for PROG_TEST_RUN: a non-zero ingress_ifindex makes the packet look forwarded
 * (with 0 an ingress program treats it as the node's own traffic).
 */
export function skbContext(ingressIfindex = 1): Buffer {
  const ctx = Buffer.alloc(SKB.testContextSize);
  ctx.writeUInt32LE(ingressIfindex, SKB.ingressIfindex);
  return ctx;
}

export type Verdict = 'pass' | 'drop';

export function verdictOf(r: TestRunResult): Verdict {
  if (r.retval === TCX.NEXT) return 'pass';
  if (r.retval === TCX.SHOT) return 'drop';
  throw new Error(`unexpected tcx return value ${r.retval}`);
}

/**
 * One node's policy programs loaded against fresh maps, filled as apply would fill them (decision
 * tables included, for rule sets that carry one); update() moves to another IR the way apply does
 * (stable numbers, contents by difference, changed tables swapped in whole).
 */
export class OfflineNode {
  readonly maps: NodeMaps;
  alloc: Allocation;
  /** Which rule sets the last update decided by table. */
  tables: TableChoice = { tabled: new Map(), fallbacks: [] };
  private tableStates: TableState[] = [];
  private readonly programs = new Map<string, Program>();

  constructor(
    ir: IR,
    private readonly node: string,
    sizes: MapSizes = { counterSlots: 1024, conntrackCapacity: 1024 },
  ) {
    this.alloc = { sets: {}, portSets: {}, slots: {} };
    this.maps = createNodeMaps(sizes);
    try {
      this.update(ir);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  update(ir: IR): void {
    const view = nodeView(ir, this.node);
    const before = this.alloc;
    ({ tables: this.tables, alloc: this.alloc } = allocateWithTables(view, before));
    const plan = planSetSync(this.maps, view, this.alloc);
    addSetMembers(this.maps, plan);
    removeSetMembers(this.maps, plan);
    const writes = planTableWrites(
      view.ruleSets,
      this.tables,
      this.alloc,
      this.tableStates,
      this.maps.tables,
    );
    const built = buildTables(writes.writes);
    try {
      this.tableStates = [...writes.kept, ...installTables(this.maps.tables, built)];
    } finally {
      for (const m of built.values()) m.close();
    }
    dropTables(this.maps.tables, freedTableIndices(before, this.alloc));
    for (const p of this.programs.values()) p.close();
    this.programs.clear();
    for (const rs of view.ruleSets) {
      const g = policyProgram(rs, this.alloc);
      this.programs.set(
        `${rs.endpoint}|${rs.direction}`,
        Program.load({
          name: g.name,
          type: 'sched_cls',
          expectedAttachType: rs.direction === 'ingress' ? 'tcx_egress' : 'tcx_ingress',
          instructions: g.program,
          maps: programMaps(this.maps),
        }),
      );
    }
  }

  program(endpoint: string, direction: Direction): Program {
    const p = this.programs.get(`${endpoint}|${direction}`);
    if (!p) throw new Error(`no program for ${endpoint} ${direction}`);
    return p;
  }

  run(endpoint: string, direction: Direction, data: Buffer, ingressIfindex = 1): Verdict {
    return verdictOf(
      this.program(endpoint, direction).testRun({
        data,
        context: skbContext(ingressIfindex),
        contextOutSize: 0,
      }),
    );
  }

  clearConntrack(): void {
    this.maps.ct.clear();
  }

  close(): void {
    for (const p of this.programs.values()) p.close();
    this.programs.clear();
    closeNodeMaps(this.maps);
  }
}
