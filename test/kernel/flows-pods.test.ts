/**
 * Flows name pods at both ends, whichever node recorded them: outside/client on node-1 is denied
 * by shop/db (node-2) and shop/web (node-1). The db denial is recorded by node-2's agent, where
 * the client is only an address; asking for the client's denials must still find it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { agentRequest } from '../../src/agent/client.js';
import { apiSocket } from '../../src/agent/paths.js';
import { agentStateDir, labAgents } from '../../src/lab/agents.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import type { Flow } from '../../src/observe/flows.js';
import { describeKernel } from '../support/kernel.js';
import { namespace, networkPolicy, pod, toYaml } from '../support/manifests.js';
import { waitUntil } from '../support/until.js';

const LAB = 'flpods';
const PORTS = [{ name: 'p', containerPort: 5432, protocol: 'TCP' as const }];

function labYaml(): string {
  return toYaml([
    namespace('outside'),
    namespace('shop'),
    pod('outside', 'client', { labels: { app: 'client' }, node: 'node-1' }),
    pod('shop', 'web', { labels: { app: 'web' }, node: 'node-1', ports: PORTS }),
    pod('shop', 'db', { labels: { app: 'db' }, node: 'node-2', ports: PORTS }),
    networkPolicy('shop', 'closed', { podSelector: {}, policyTypes: ['Ingress'] }),
  ]);
}

/** What `switchyard flows --pod P --verdict deny` asks: every agent of the lab. */
async function denialsOf(podId: string): Promise<Flow[]> {
  const answers = await Promise.all(
    labAgents(LAB).map((a) =>
      agentRequest<{ flows: Flow[] }>(
        apiSocket(agentStateDir(LAB, a.node)),
        `/v1/flows?verdict=deny&pod=${encodeURIComponent(podId)}`,
      ),
    ),
  );
  return answers.flatMap((a) => a.flows);
}

describeKernel('flows: pods at both ends, across nodes', () => {
  let dir = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sy-flp-'));
    const file = join(dir, 'lab.yaml');
    writeFileSync(file, labYaml());
    await labDown(LAB);
    await converge({
      name: LAB,
      model: loadManifests([file]),
      files: [file],
      mode: 'up',
      backend: 'ebpf',
      nodeCount: 2,
    });
  }, 120_000);

  afterAll(async () => {
    await labDown(LAB);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("a client's denials recorded on the peer's node are found by the client's pod, both ends named", async () => {
    await measureReach(LAB, { port: 5432, protocol: 'TCP', from: ['outside/client'], timeoutMs: 300 });
    const flows = await waitUntil(
      'the denials by shop/db (node-2) and shop/web (node-1)',
      async () => {
        const found = await denialsOf('outside/client');
        const db = found.find((f) => f.endpoint === 'shop/db');
        const web = found.find((f) => f.endpoint === 'shop/web');
        return db && web ? found : undefined;
      },
      10_000,
    );
    const db = flows.find((f) => f.endpoint === 'shop/db');
    expect(db).toMatchObject({
      node: 'node-2',
      direction: 'ingress',
      verdict: 'deny',
      dport: 5432,
      source: { pod: 'outside/client', namespace: 'outside', name: 'client', labels: { app: 'client' } },
      destination: { pod: 'shop/db', namespace: 'shop', name: 'db', labels: { app: 'db' } },
    });
    expect(flows.find((f) => f.endpoint === 'shop/web')?.node).toBe('node-1');
    // Asked by the server's name, the same record.
    expect((await denialsOf('shop/db')).some((f) => f.key === db?.key)).toBe(true);
  }, 60_000);
});
