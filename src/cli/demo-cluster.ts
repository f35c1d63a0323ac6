/**
 * The demo's cluster part: three nodes take their desired state from a real etcd; one node is cut
 * off while a policy changes (it keeps the old state, the others move on), then healed; etcd is
 * killed and the dataplane goes on enforcing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyManifests } from '../datastore/apply.js';
import type { EtcdStore } from '../datastore/etcd.js';
import { listObjects } from '../datastore/read.js';
import {
  clusterApply,
  clusterStatus,
  clusterStore,
  clusterUp,
  healNode,
  killClusterEtcd,
  partitionNode,
  restartClusterEtcd,
} from '../lab/cluster.js';
import { allLabSummaries, labDown, measureReach } from '../lab/index.js';
import { readState } from '../lab/state.js';
import type { DemoStep } from './demo-step.js';
import { formatTable } from './output.js';
import { EXAMPLES_DIR } from './paths.js';
import { errorMessage } from '../util/errors.js';

export const DEMO_CLUSTER = 'democlu';

const CLIENT_TO_DB = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-client, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress:
    - from: [{ namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: outside } } }]
      ports: [{ port: 5432 }]
`;

async function clientReachesDb(): Promise<boolean> {
  const r = await measureReach(DEMO_CLUSTER, {
    port: 5432,
    protocol: 'TCP',
    from: ['outside/client'],
    timeoutMs: 300,
  });
  return r.matrix.results['outside/client']?.['shop/db'] === true;
}

function nodeOf(pod: string): string {
  return readState(DEMO_CLUSTER)?.topology?.pods.find((p) => p.id === pod)?.node ?? '?';
}

const verdict = (ok: boolean): string => (ok ? 'connects' : 'blocked');

/** The pods as etcd holds them: what `switchyard get pods --lab` shows. */
async function storedPods(): Promise<string> {
  const store = clusterStore(DEMO_CLUSTER);
  let pods;
  try {
    pods = await listObjects(store, { kind: 'Pod' });
  } finally {
    store.close();
  }
  return formatTable(
    ['NAMESPACE', 'NAME', 'NODE', 'IP'],
    pods.items.map((i) => {
      const o = i.object as { spec?: { nodeName?: string }; status?: { podIP?: string } };
      return [i.ref.namespace, i.ref.name, o.spec?.nodeName, o.status?.podIP];
    }),
  );
}

function clusterUpStep(): DemoStep {
  return {
    title: 'Cluster mode: a real etcd holds the desired state, one eBPF agent per node watches it',
    command: `switchyard cluster up examples/walkthrough --nodes 3 --backend ebpf --lab ${DEMO_CLUSTER}`,
    run: async () => {
      if (allLabSummaries().some((l) => l.name === DEMO_CLUSTER))
        throw new Error(
          `a lab named '${DEMO_CLUSTER}' exists already: 'switchyard cluster down --lab ${DEMO_CLUSTER}'`,
        );
      const r = await clusterUp({
        name: DEMO_CLUSTER,
        files: [join(EXAMPLES_DIR, 'walkthrough')],
        backend: 'ebpf',
        nodeCount: 3,
      });
      return [
        `etcd ${r.etcd.clientUrl} (loopback only), revision ${r.write.revision}; ${r.lab.durationMs} ms`,
        `$ switchyard get pods --lab ${DEMO_CLUSTER}`,
        await storedPods(),
      ].join('\n');
    },
  };
}

function cutStep(change: string): DemoStep {
  return {
    title: "Cut the db's node off from etcd (in the kernel), then let outside/client reach shop/db",
    command: `switchyard cluster cut NODE && switchyard apply db-from-client.yaml --lab ${DEMO_CLUSTER}`,
    run: async () => {
      const node = nodeOf('shop/db');
      const before = await clientReachesDb();
      await partitionNode(DEMO_CLUSTER, node);
      const started = performance.now();
      const r = await clusterApply(DEMO_CLUSTER, [change]);
      const ms = Math.round(performance.now() - started);
      const during = await clientReachesDb();
      const status = await clusterStatus(DEMO_CLUSTER);
      return [
        `outside/client → shop/db:5432 before: ${verdict(before)}`,
        `cut off ${node} (cgroup programs drop its agent's packets to etcd), wrote revision ${r.write.revision}: ` +
          `in force on ${status.nodes.length - r.pending.length} nodes after ${ms} ms, not on ${r.pending.join(', ')}`,
        `outside/client → shop/db:5432 now: ${verdict(during)} (${node} keeps its last state)`,
        formatTable(
          ['node', 'revision in force', 'cut off from etcd'],
          status.nodes.map((n) => [n.node, n.revision ?? '-', n.cutOff ? 'yes' : 'no']),
        ),
      ].join('\n');
    },
  };
}

function healStep(): DemoStep {
  return {
    title: 'Heal the partition: the node resumes its watch from the revision it had and catches up',
    command: `switchyard cluster heal NODE --lab ${DEMO_CLUSTER}`,
    run: async () => {
      const node = nodeOf('shop/db');
      await healNode(DEMO_CLUSTER, node);
      const started = performance.now();
      const deadline = Date.now() + 20_000;
      let ok = false;
      while (!ok && Date.now() < deadline) ok = await clientReachesDb();
      return `outside/client → shop/db:5432: ${verdict(ok)} ${Math.round(performance.now() - started)} ms after healing ${node}`;
    },
  };
}

/** The first line of why a write to a dead etcd failed, shortened for the demo. */
async function refusedWrite(store: EtcdStore, change: string): Promise<string> {
  try {
    await applyManifests(store, [change], { prune: false });
    return '';
  } catch (e) {
    return errorMessage(e).split('\n')[0]?.slice(0, 110) ?? '';
  }
}

function killEtcdStep(change: string): DemoStep {
  return {
    title: 'Kill etcd: every node keeps enforcing; writes fail loudly; a restart loses nothing acknowledged',
    command: `switchyard cluster etcd kill && switchyard apply … && switchyard cluster etcd start`,
    run: async () => {
      const store = clusterStore(DEMO_CLUSTER);
      await killClusterEtcd(DEMO_CLUSTER);
      const still = await clientReachesDb();
      const refused = await refusedWrite(store, change);
      await restartClusterEtcd(DEMO_CLUSTER);
      let kept = false;
      try {
        kept =
          (await listObjects(store, { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-from-client' }))
            .items.length === 1;
      } finally {
        store.close();
      }
      return [
        `with etcd dead, outside/client → shop/db:5432: ${verdict(still)}`,
        `apply refused: ${refused}…`,
        `after restart, db-from-client is ${kept ? 'still stored' : 'MISSING'}`,
      ].join('\n');
    },
  };
}

export function clusterSteps(): DemoStep[] {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-demo-cluster-'));
  const change = join(dir, 'db-from-client.yaml');
  writeFileSync(change, CLIENT_TO_DB);
  return [
    clusterUpStep(),
    cutStep(change),
    healStep(),
    killEtcdStep(change),
    {
      title: 'Clean up the cluster: agents, etcd and its data, namespaces, pins',
      command: `switchyard cluster down --lab ${DEMO_CLUSTER}`,
      run: async () => {
        await labDown(DEMO_CLUSTER);
        rmSync(dir, { recursive: true, force: true });
        return 'removed';
      },
    },
  ];
}
