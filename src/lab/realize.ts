/** Carries a KernelPlan out: namespaces, links, routes, sysctls and cgroups, in dependency order. */
import { join } from 'node:path';
import {
  configureEndpointInterface,
  createNetns,
  deleteNetns,
  ensureCgroup,
  ipBatch,
  removeCgroupTree,
  writeSysctls,
} from '../netns/index.js';
import { HOST_VETH_MAC, POD_GATEWAY, POD_INTERFACE } from './names.js';
import { POD_GATEWAY_V6, type KernelPlan, type NamespaceBatch, type PodSide } from './plan.js';
import { silentProgress, type Progress } from './progress.js';

/** A pod's (or outside client's) end of its veth: Calico's address/32 and link-scoped gateway. */
function configureEndpoint(p: PodSide): void {
  configureEndpointInterface(p.netns, {
    name: POD_INTERFACE,
    address: p.address,
    gateway: POD_GATEWAY,
    gatewayMac: HOST_VETH_MAC,
    ...(p.addressV6 ? { v6: { address: p.addressV6, gateway: POD_GATEWAY_V6 } } : {}),
  });
}

async function forceBatches(batches: readonly NamespaceBatch[]): Promise<void> {
  await Promise.all(batches.map((b) => ipBatch(b.lines, { netns: b.netns, force: true })));
}

/** Plugs pods born closed (plan.ts plugBatches): their host ends up and their routes in. */
export async function plugPods(batches: readonly NamespaceBatch[]): Promise<void> {
  await Promise.all(batches.map((b) => ipBatch(b.lines, { netns: b.netns })));
}

/** Removes what leaves: pods' cgroups (and anything running there), links, then namespaces. */
export async function tearDownPart(plan: KernelPlan, cgroupRoot: string): Promise<void> {
  const stuck = (
    await Promise.all(plan.removedPods.map((p) => removeCgroupTree(join(cgroupRoot, p.slug))))
  ).flat();
  if (stuck.length > 0) throw new Error(`cannot remove cgroups: ${stuck.join(', ')}`);
  await forceBatches(plan.unplug);
  const left = await deleteNetns(plan.deleteNetns);
  if (left.length > 0) throw new Error(`cannot delete network namespaces: ${left.join(', ')}`);
}

/** Builds what arrives. Each step needs the previous one: namespaces, fabric, nodes, then pods. */
export async function buildPart(
  plan: KernelPlan,
  cgroupRoot: string,
  progress: Progress = silentProgress,
): Promise<void> {
  if (plan.createNetns.length > 0) {
    progress.phase('namespaces', 1);
    await createNetns(plan.createNetns);
    progress.tick();
  }
  if (plan.fabric) await ipBatch(plan.fabric.lines, { netns: plan.fabric.netns });
  await forceBatches(plan.staleRoutes);
  if (plan.nodes.length > 0) {
    progress.phase('nodes', plan.nodes.length);
    await Promise.all(
      plan.nodes.map(async (b) => {
        await ipBatch(b.lines, { netns: b.netns });
        progress.tick();
      }),
    );
  }
  for (const s of plan.sysctls) writeSysctls(s.netns, s.entries);
  if (plan.pods.length > 0) {
    progress.phase('pods', plan.pods.length);
    for (const p of plan.pods) {
      configureEndpoint(p);
      progress.tick();
      // Synchronous netlink work: let a progress bar (and anything else) breathe now and then.
      if (plan.pods.length > 50) await new Promise((r) => setImmediate(r));
    }
  }
  // Outside clients are wired like pods, but have no cgroup: they are not the lab's workloads.
  for (const o of plan.outsideSides) configureEndpoint(o);
  for (const p of plan.addedPods) ensureCgroup(join(cgroupRoot, p.slug));
}
