/**
 * `switchyard demo`'s step "reach a service from outside": the example web service exposed on a
 * node port twice (Cluster and Local), probed from the lab's outside client through each node,
 * with the client address each answering pod saw.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { converge, probeService, type ServiceProbeResult } from '../lab/index.js';
import { loadManifests } from '../model/index.js';
import type { DemoStep } from './demo-step.js';
import { formatTable } from './output.js';

const CLUSTER_PORT = 30080;
const LOCAL_PORT = 30081;
const PROBES = 100;

/** web/web's pods on two node ports: Cluster (any pod, source NAT) and Local (the node's pods, client address kept). */
const EXPOSED = [CLUSTER_PORT, LOCAL_PORT]
  .map((nodePort) => {
    const local = nodePort === LOCAL_PORT;
    return [
      'apiVersion: v1',
      'kind: Service',
      `metadata: { name: web-${local ? 'local' : 'cluster'}, namespace: web }`,
      'spec:',
      '  type: NodePort',
      ...(local ? ['  externalTrafficPolicy: Local'] : []),
      '  selector: { app: web }',
      `  ports: [{ port: 80, targetPort: http, nodePort: ${nodePort} }]`,
    ].join('\n');
  })
  .join('\n---\n');

/** `web-0 ×34 saw 198.18.255.1`, one per pod and address. */
function answers(r: ServiceProbeResult, client: string): string {
  return Object.entries(r.peers)
    .flatMap(([pod, peers]) =>
      Object.entries(peers).map(
        ([peer, n]) =>
          `${pod.split('/')[1] ?? pod} ×${n} saw ${peer === client ? `${peer} (the client)` : peer}`,
      ),
    )
    .join(', ');
}

export function outsideStep(lab: string, files: readonly string[]): DemoStep {
  return {
    title:
      'Reach a service from outside: node ports from a client outside the cluster, Cluster against Local, and the address each pod saw',
    command:
      `switchyard lab apply … web-nodeport.yaml --lab ${lab} && ` +
      `switchyard lab probe --lab ${lab} --from outside:client --to nodeport/node-1:${LOCAL_PORT} --count ${PROBES}`,
    run: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
      try {
        const file = join(dir, 'web-nodeport.yaml');
        writeFileSync(file, EXPOSED + '\n');
        const all = [...files, file];
        const r = await converge({ name: lab, model: loadManifests(all), files: all, mode: 'apply' });
        const nodes = (r.state.topology?.nodes ?? []).map((n) => n.name);
        const rows: string[][] = [];
        for (const [policy, port] of [
          ['Cluster', CLUSTER_PORT],
          ['Local', LOCAL_PORT],
        ] as const) {
          for (const node of nodes) {
            const p = await probeService(lab, {
              from: 'outside:client',
              to: `nodeport/${node}:${port}`,
              count: PROBES,
            });
            rows.push([
              `${policy} ${port}`,
              node,
              `${p.count - p.failures}/${p.count}`,
              answers(p, p.fromAddress) || JSON.stringify(p.errors),
            ]);
          }
        }
        return [
          'outside:client probes each node port through each node:',
          formatTable(
            ['NODE PORT', 'ENTERS AT', 'ANSWERED', 'WHO ANSWERED, AND THE CLIENT ADDRESS IT SAW'],
            rows,
          ),
          "Cluster: any pod answers; a pod may see the entry node's address instead of the client's (source NAT, so replies return through that node);",
          "Local: only the entry node's own pods answer, and they see the client's real address.",
        ].join('\n');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
