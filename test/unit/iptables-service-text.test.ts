/**
 * The services' chains of an iptables plan render their rules when read and keep none: an agent
 * holds its plan between applies, and at 10k services the text of the rules was 12 MiB of it
 * (docs/agent.md, "the services' rules, rendered when read").
 */
import { describe, expect, it } from 'vitest';
import { serviceIR } from '../../src/bench/scenarios/services.js';
import { diffPlan, kernelStateAfter } from '../../src/dataplane/iptables/diff.js';
import type { KernelState } from '../../src/dataplane/iptables/kernel.js';
import { SERVICES_CHAIN, SERVICES_REJECT_CHAIN } from '../../src/dataplane/iptables/names.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { restoreScript } from '../../src/dataplane/iptables/script.js';
import { stringsWhere } from '../support/heap-snapshot.js';

const SERVICES = 2000;
const NODE = 'bench-node';
/** A backend's DNAT rule; each service's two backends have one each. */
const isDnat = (text: string): boolean => text.includes('-j DNAT') && text.includes(':8080');

const empty: KernelState = { sets: new Set(), tables: new Map() };

function natOf(plan: NodePlan) {
  const nat = plan.tables.find((t) => t.family === 4 && t.table === 'nat');
  if (!nat) throw new Error('no nat table');
  return nat;
}

describe('iptables plan: the services render their rules when read', () => {
  it('holds no text of them, plan and shadow kept as an agent keeps them', async () => {
    const plan = planForNode(serviceIR(SERVICES), NODE);
    const shadow = kernelStateAfter(plan);
    expect(await stringsWhere(isDnat)).toBe(0);
    // Read, they are all there: a first apply writes each backend's DNAT.
    const script = diffPlan(plan, undefined, empty)
      .tables.map((t) => restoreScript(t.table, t.change))
      .join('');
    expect(script.split('\n').filter(isDnat)).toHaveLength(2 * SERVICES);
    expect(shadow.tables.get('iptables/nat')?.chains.size).toBe(natOf(plan).chains.length);
  });

  it('renders the same rules on every read, and a service change writes only what it changed', () => {
    const before = planForNode(serviceIR(SERVICES), NODE);
    const after = planForNode(serviceIR(SERVICES, true), NODE);
    for (const c of natOf(before).chains) expect(c.rules).toEqual(c.rules);
    const diff = diffPlan(after, before, kernelStateAfter(before));
    const written = diff.tables.flatMap((t) => t.change.write.map((c) => c.name));
    // Service 0's pick chain and its new backend's chain; SY-SERVICES and SY-SVC-REJECT are
    // compared piece by piece and left alone (the cluster IP and its port did not change).
    expect(written).toHaveLength(2);
    expect(written).not.toContain(SERVICES_CHAIN);
    expect(written).not.toContain(SERVICES_REJECT_CHAIN);
    expect(diff.tables.flatMap((t) => t.change.deleteChains)).toHaveLength(1);
  });
});
