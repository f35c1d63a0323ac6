/**
 * The agent's local API over a unix socket (and the token-guarded TCP listener), served from a real
 * Agent (fake backend and kernel access), a FlowTable and AgentMetrics.
 */
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { loopbackAddress, startApi, type ApiServers } from '../../src/agent/api.js';
import { agentRequest, agentStream } from '../../src/agent/client.js';
import { DirectorySource } from '../../src/agent/dir-source.js';
import type {
  ApplyResult,
  Backend,
  ConntrackView,
  NodeTarget,
  RuleCounter,
  SupportReport,
} from '../../src/dataplane/backend.js';
import type { IR } from '../../src/ir/types.js';
import type { EventSource, VerdictEvent } from '../../src/dataplane/events.js';
import { FlowTable, type Flow, type FlowStats } from '../../src/observe/flows.js';
import { AgentMetrics } from '../../src/observe/metrics.js';
import { RuleCatalog } from '../../src/observe/rules.js';
import { globalPolicy, modelOf, namespace, networkPolicy, pod, compileIR } from '../support/manifests.js';

const TARGET: NodeTarget = { scope: 'unit', node: 'node-2', netns: 'unit-node-2' };
const TOKEN = 'sekrit-token-123';

/**
 * shop/web on node-1; shop/db and shop/cache on node-2. db takes ingress from web on 5432 only;
 * the global policy deny-bad denies 203.0.113.0/24 into every pod.
 */
const MODEL = modelOf([
  namespace('shop', { team: 'shop' }),
  pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-1' }),
  pod('shop', 'db', {
    labels: { app: 'db' },
    ip: '198.18.1.2',
    node: 'node-2',
    ports: [{ name: 'pg', containerPort: 5432 }],
  }),
  pod('shop', 'cache', { labels: { app: 'cache' }, ip: '198.18.1.3', node: 'node-2' }),
  networkPolicy('shop', 'db-allow-web', {
    podSelector: { matchLabels: { app: 'db' } },
    policyTypes: ['Ingress'],
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
  }),
  globalPolicy('deny-bad', {
    order: 10,
    ingress: [{ action: 'Deny', from: [{ nets: ['203.0.113.0/24'] }] }],
  }),
]);
const IR_ = compileIR(MODEL);

class FakeBackend implements Backend {
  readonly name = 'nftables' as const;
  applies = 0;
  render(_ir: IR, node: string) {
    return { backend: this.name, node, text: '' };
  }
  apply(): Promise<ApplyResult> {
    this.applies++;
    return Promise.resolve({ changed: [], durationMs: 0 });
  }
  dropShadow(): void {}
  remove(): Promise<void> {
    return Promise.resolve();
  }
  counters(): Promise<RuleCounter[]> {
    return Promise.resolve([
      {
        rule: 'np:shop/db-allow-web/ingress/0',
        endpoint: 'shop/db',
        direction: 'ingress',
        packets: 31,
        bytes: 4096,
      },
      { rule: 'shop/db/ingress/default', endpoint: 'shop/db', direction: 'ingress', packets: 4, bytes: 240 },
      { rule: 'prefilter/blocklist', packets: 6, bytes: 360 },
    ]);
  }
  // The kernel never drifts here and has no change events.
  readonly driftPollMs = 500;
  fingerprint(): Promise<string> {
    return Promise.resolve('fp-1');
  }
  prepareRepair(): Promise<string[]> {
    return Promise.resolve([]);
  }
  watchChanges(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  flowSource(): EventSource {
    throw new Error('this test feeds the flow table itself');
  }
  conntrack(): ConntrackView {
    return { description: 'none', count: () => Promise.resolve(0), list: () => Promise.resolve([]) };
  }
  checkSupport(): Promise<SupportReport> {
    return Promise.resolve({ supported: true, missing: [] });
  }
  tamper(): Promise<string> {
    return Promise.resolve('');
  }
}

let sourceDir: string;
let stateDir: string;
let socket: string;
let tcpPort: number;
let agent: Agent;
let flows: FlowTable;
let api: ApiServers;
const clock = { t: Date.UTC(2025, 0, 1) };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function verdict(over: Partial<VerdictEvent>): VerdictEvent {
  return {
    kind: 'verdict',
    time: clock.t,
    verdict: 'allow',
    rule: 'np:shop/db-allow-web/ingress/0',
    endpoint: 'shop/db',
    direction: 'ingress',
    protocol: 6,
    src: '198.18.1.1',
    sport: 40000,
    dst: '198.18.1.2',
    dport: 5432,
    bytes: 60,
    ...over,
  };
}

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function raw(
  target: { socketPath: string } | { host: string; port: number },
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, path, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  sourceDir = mkdtempSync(join(tmpdir(), 'sy-api-src-'));
  stateDir = mkdtempSync(join(tmpdir(), 'sy-api-state-'));
  socket = join(stateDir, 'api.sock');
  writeFileSync(
    join(sourceDir, 'desired.json'),
    JSON.stringify({ revision: 'rev-1', ir: IR_, model: MODEL }),
  );
  const backend = new FakeBackend();
  agent = new Agent({
    target: TARGET,
    backend,
    source: new DirectorySource(sourceDir),
    stateDir,
    logger: pino({ level: 'silent' }),
    reconcileMs: 50,
  });
  await agent.start();
  const catalog = (): RuleCatalog => new RuleCatalog(agent.appliedIR);
  flows = new FlowTable({
    node: TARGET.node,
    maxEventsPerSecond: 1_000_000,
    now: () => clock.t,
    policyOf: (r) => catalog().policyOf(r),
    podOfCgroup: (id) => (id === '100' ? 'shop/web' : undefined),
  });
  const metrics = new AgentMetrics(
    {
      counters: () => backend.counters(),
      conntrackEntries: () => Promise.resolve(3),
      flowStats: (): FlowStats => flows.stats(),
      describeRule: (r) => catalog().describe(r),
      policy: () => agent.status.policy,
      agent: () => ({ endpoints: 0, policies: 0 }),
    },
    { node: TARGET.node, backend: backend.name },
  );
  tcpPort = await freePort();
  api = await startApi(
    { agent, flows, metrics },
    { socket, tcp: { host: '127.0.0.1', port: tcpPort, token: TOKEN } },
  );

  // Flows, oldest first: an allowed one into db (sport 1), a denied one by deny-bad (sport 2),
  // one denied by db's default (sport 3), and an allowed one into cache (sport 4).
  flows.event(verdict({ sport: 1 }));
  flows.event(verdict({ verdict: 'deny', rule: 'gp:deny-bad/ingress/0', src: '203.0.113.9', sport: 2 }));
  flows.event(verdict({ verdict: 'deny', rule: 'shop/db/ingress/default', src: '198.18.1.3', sport: 3 }));
  flows.event(
    verdict({
      rule: 'shop/cache/ingress/default',
      endpoint: 'shop/cache',
      dst: '198.18.1.3',
      dport: 6379,
      sport: 4,
    }),
  );
  flows.lost(5, 'ring buffer');
});

afterAll(async () => {
  await api?.close();
  await agent?.stop();
  rmSync(sourceDir, { recursive: true, force: true });
  rmSync(stateDir, { recursive: true, force: true });
});

describe('agent API over the unix socket', () => {
  it('listens on a socket only its owner may use', () => {
    expect(statSync(socket).mode & 0o777).toBe(0o600);
  });

  it('GET /v1/status: what is in force, and the flow counters', async () => {
    const s = await agentRequest<Record<string, unknown>>(socket, '/v1/status');
    expect(s).toMatchObject({
      node: 'node-2',
      backend: 'nftables',
      netns: 'unit-node-2',
      scope: 'unit',
      revision: 'rev-1',
      desiredRevision: 'rev-1',
      repairs: 0,
      errors: 0,
      pid: process.pid,
      lastApply: { mode: 'full', revision: 'rev-1' },
      flows: { flows: 4, lost: { 'ring buffer': 5 }, rateLimited: 0 },
      // This node's four rule sets (db and cache, both directions), walked: the IR has no tables.
      policy: { mode: 'walk', tables: 0, walked: 4, entries: 0, overflows: [] },
    });
  });

  it("GET /v1/endpoints: only this node's pods, with the policies of each direction", async () => {
    type Side = {
      globalPolicies: string[];
      networkPolicies: string[];
      default: string;
      rules: number;
      decidedBy: string;
    };
    const eps = await agentRequest<
      { id: string; addresses: string[]; labels: Record<string, string>; ingress: Side; egress: Side }[]
    >(socket, '/v1/endpoints');
    expect(eps.map((e) => e.id).sort()).toEqual(['shop/cache', 'shop/db']);
    const db = eps.find((e) => e.id === 'shop/db');
    expect(db?.addresses).toEqual(['198.18.1.2']);
    expect(db?.labels).toMatchObject({ app: 'db' });
    expect(db?.ingress).toEqual({
      globalPolicies: ['GlobalPolicy deny-bad'],
      networkPolicies: ['NetworkPolicy shop/db-allow-web'],
      default: 'deny',
      rules: 2,
      decidedBy: 'walk',
    });
    expect(db?.egress).toEqual({
      globalPolicies: [],
      networkPolicies: [],
      default: 'allow',
      rules: 0,
      decidedBy: 'walk',
    });
    const cache = eps.find((e) => e.id === 'shop/cache');
    expect(cache?.ingress).toEqual({
      globalPolicies: ['GlobalPolicy deny-bad'],
      networkPolicies: [],
      default: 'allow',
      rules: 1,
      decidedBy: 'walk',
    });
  });

  it('GET /v1/policies: the policies selecting a pod on this node, with their rules', async () => {
    const ps = await agentRequest<unknown[]>(socket, '/v1/policies');
    expect(ps).toEqual([
      {
        policy: 'GlobalPolicy deny-bad',
        kind: 'GlobalPolicy',
        name: 'deny-bad',
        directions: ['ingress'],
        selects: ['shop/cache', 'shop/db'],
        rules: ['gp:deny-bad/ingress/0'],
      },
      {
        policy: 'NetworkPolicy shop/db-allow-web',
        kind: 'NetworkPolicy',
        namespace: 'shop',
        name: 'db-allow-web',
        directions: ['ingress'],
        selects: ['shop/db'],
        rules: ['np:shop/db-allow-web/ingress/0'],
      },
    ]);
  });

  it('GET /v1/flows: most recent first, with the node, stats and policy labels', async () => {
    const r = await agentRequest<{ node: string; flows: Flow[]; stats: FlowStats }>(socket, '/v1/flows');
    expect(r.node).toBe('node-2');
    expect(r.flows.map((f) => f.sport)).toEqual([4, 3, 2, 1]);
    expect(r.flows.find((f) => f.sport === 1)?.policy).toBe('NetworkPolicy shop/db-allow-web');
    expect(r.flows.find((f) => f.sport === 2)?.policy).toBe('GlobalPolicy deny-bad');
    expect(r.flows.find((f) => f.sport === 3)?.policy).toBeUndefined();
    expect(r.stats).toMatchObject({ flows: 4, lost: { 'ring buffer': 5 } });
  });

  it('GET /v1/flows filters by verdict, pod and policy, and limits', async () => {
    const sports = async (query: string): Promise<number[]> =>
      (await agentRequest<{ flows: Flow[] }>(socket, `/v1/flows?${query}`)).flows.map((f) => f.sport);
    expect(await sports('verdict=deny')).toEqual([3, 2]);
    expect(await sports('verdict=allow')).toEqual([4, 1]);
    expect(await sports('pod=shop/cache')).toEqual([4]);
    expect(await sports(`pod=${encodeURIComponent('shop/db')}`)).toEqual([3, 2, 1]);
    expect(await sports('policy=deny-bad')).toEqual([2]);
    expect(await sports('policy=default')).toEqual([4, 3]);
    expect(await sports('limit=2')).toEqual([4, 3]);
    expect(await sports('pod=shop/db&verdict=deny&limit=1')).toEqual([3]);
  });

  it('GET /v1/flows refuses a bad verdict or limit with 400', async () => {
    const bad = await raw({ socketPath: socket }, '/v1/flows?verdict=reject');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({
      error: "verdict must be allow, deny, log or dropped, not 'reject'",
    });
    await expect(agentRequest(socket, '/v1/flows?verdict=reject')).rejects.toThrow(/verdict must be/);
    for (const limit of ['0', '-1', '2.5', 'many']) {
      const r = await raw({ socketPath: socket }, `/v1/flows?limit=${limit}`);
      expect(r.status, limit).toBe(400);
      expect(r.body).toMatch(/limit/);
    }
  });

  it('GET /v1/explain names the deciding policy', async () => {
    const allowed = await agentRequest<{
      allowed: boolean;
      ingress?: { rule?: { policy: string; id: string } };
      summary: string;
    }>(socket, '/v1/explain?from=shop/web&to=shop/db&port=5432');
    expect(allowed.allowed).toBe(true);
    expect(allowed.ingress?.rule).toMatchObject({
      policy: 'NetworkPolicy shop/db-allow-web',
      id: 'np:shop/db-allow-web/ingress/0',
    });

    const denied = await agentRequest<{ allowed: boolean; ingress?: { rule?: { policy: string } } }>(
      socket,
      '/v1/explain?from=203.0.113.7&to=shop/db&port=5432&protocol=tcp',
    );
    expect(denied.allowed).toBe(false);
    expect(denied.ingress?.rule?.policy).toBe('GlobalPolicy deny-bad');

    const wrongPort = await agentRequest<{ allowed: boolean; ingress?: { reason: string } }>(
      socket,
      '/v1/explain?from=shop/web&to=shop/db&port=22',
    );
    expect(wrongPort.allowed).toBe(false);
  });

  it('GET /v1/explain answers 400 to incomplete or bad questions', async () => {
    for (const q of [
      'from=shop/web',
      'from=shop/web&to=shop/db',
      'from=shop/web&to=shop/db&port=0',
      'from=shop/web&to=shop/db&port=80&protocol=GRE',
      'from=shop/nobody&to=shop/db&port=80',
      'from=shop/web&to=shop/db&port=80&family=5',
    ]) {
      const r = await raw({ socketPath: socket }, `/v1/explain?${q}`);
      expect(r.status, q).toBe(400);
      expect(JSON.parse(r.body).error, q).toEqual(expect.any(String));
    }
  });

  it('GET /v1/explain &family=6 asks about the IPv6 addresses (these pods have none)', async () => {
    const r = await raw({ socketPath: socket }, '/v1/explain?from=shop/web&to=shop/db&port=5432&family=6');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/pod shop\/web has no IPv6 address/);
  });

  it('GET /v1/explain takes a service destination with its port (svc/NS/NAME:PORT)', async () => {
    const r = await raw({ socketPath: socket }, '/v1/explain?from=shop/web&to=svc/shop/nope:80');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/no service 'shop\/nope'/);
  });

  it('answers 404 to unknown paths and methods', async () => {
    const r = await raw({ socketPath: socket }, '/v1/nothing');
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body).error).toContain('GET /v1/nothing');
    expect((await raw({ socketPath: socket }, '/v1/status', {}, 'DELETE')).status).toBe(404);
    await expect(agentRequest(socket, '/v2/status')).rejects.toThrow(/no such endpoint/);
  });

  it('POST /v1/sync re-reads the source and answers with the status', async () => {
    const s = await agentRequest<{ revision: string; desiredRevision: string }>(socket, '/v1/sync', {
      method: 'POST',
    });
    expect(s).toMatchObject({ revision: 'rev-1', desiredRevision: 'rev-1' });
  });

  it('GET /metrics: Prometheus text with the rule counters described from the IR in force', async () => {
    const r = await raw({ socketPath: socket }, '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    const line = (name: string, pattern: RegExp): string | undefined =>
      r.body.split('\n').find((l) => l.startsWith(`${name}{`) && pattern.test(l));
    const allowed = line('switchyard_rule_packets_total', /rule="np:shop\/db-allow-web\/ingress\/0"/);
    expect(allowed).toContain('policy_kind="NetworkPolicy",policy="shop/db-allow-web"');
    expect(allowed).toContain('action="allow"');
    expect(allowed).toMatch(/ 31$/);
    const dflt = line('switchyard_rule_bytes_total', /rule="shop\/db\/ingress\/default"/);
    expect(dflt).toContain('policy_kind="default"');
    expect(dflt).toContain('action="deny"');
    expect(dflt).toMatch(/ 240$/);
    expect(line('switchyard_prefilter_drops_total', /prefilter="blocklist"/)).toMatch(/ 6$/);
    expect(line('switchyard_flow_events_dropped_total', /where="ring_buffer"/)).toMatch(/ 5$/);
    expect(line('switchyard_conntrack_entries', /node="node-2"/)).toMatch(/ 3$/);
  });

  it('GET /v1/flows?follow=1 streams flows pushed after subscribing, filtered', async () => {
    const received: Flow[] = [];
    const abort = new AbortController();
    const stream = agentStream(
      socket,
      '/v1/flows?follow=1&verdict=deny',
      (d) => received.push(d as Flow),
      abort.signal,
    );
    // Keep pushing until the subscription is in place and a batch has been flushed.
    const pusher = setInterval(() => {
      clock.t += 10;
      flows.event(verdict({ sport: 7000 }));
      flows.event(
        verdict({ verdict: 'deny', rule: 'gp:deny-bad/ingress/0', src: '203.0.113.50', sport: 7001 }),
      );
    }, 25);
    try {
      await vi.waitFor(() => expect(received.length).toBeGreaterThan(0), { timeout: 3000, interval: 20 });
    } finally {
      clearInterval(pusher);
    }
    expect(received.every((f) => f.verdict === 'deny' && f.sport === 7001)).toBe(true);
    expect(received[0]).toMatchObject({
      src: '203.0.113.50',
      policy: 'GlobalPolicy deny-bad',
      node: 'node-2',
    });
    abort.abort();
    await expect(
      Promise.race([stream.then(() => 'ended'), new Promise((r) => setTimeout(() => r('hung'), 2000))]),
    ).resolves.toBe('ended');
  });
});

describe('agent API over TCP', () => {
  const tcp = (): { host: string; port: number } => ({ host: '127.0.0.1', port: tcpPort });

  it('answers 401 without a token or with a wrong one', async () => {
    const none = await raw(tcp(), '/v1/status');
    expect(none.status).toBe(401);
    expect(none.body).not.toContain('rev-1');
    expect((await raw(tcp(), '/v1/status', { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await raw(tcp(), '/v1/status', { authorization: `Bearer ${TOKEN}x` })).status).toBe(401);
    expect((await raw(tcp(), '/metrics')).status).toBe(401);
  });

  it('answers with the bearer token', async () => {
    const r = await raw(tcp(), '/v1/status', { authorization: `Bearer ${TOKEN}` });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ node: 'node-2', revision: 'rev-1' });
    const notFound = await raw(tcp(), '/v1/nothing', { authorization: `Bearer ${TOKEN}` });
    expect(notFound.status).toBe(404);
  });

  it('refuses a foreign Host header even with the token (DNS rebinding)', async () => {
    const rebound = await raw(tcp(), '/v1/status', {
      authorization: `Bearer ${TOKEN}`,
      host: `evil.example:${tcpPort}`,
    });
    expect(rebound.status).toBe(403);
    expect(rebound.body).not.toContain('rev-1');
    const page = await raw(tcp(), `/?token=${TOKEN}`, { host: `evil.example:${tcpPort}` });
    expect(page.status).toBe(403);
    expect(page.headers['set-cookie']).toBeUndefined();
    const wrongPort = await raw(tcp(), '/v1/status', {
      authorization: `Bearer ${TOKEN}`,
      host: `127.0.0.1:${tcpPort + 1}`,
    });
    expect(wrongPort.status).toBe(403);
    const named = await raw(tcp(), '/v1/status', {
      authorization: `Bearer ${TOKEN}`,
      host: `localhost:${tcpPort}`,
    });
    expect(named.status).toBe(200);
  });

  it('trades ?token= on a page for the session cookie, which then opens the API', async () => {
    const page = await raw(tcp(), `/?token=${TOKEN}&x=1`);
    expect(page.status).toBe(303);
    expect(page.headers.location).toBe('/?x=1');
    const cookie = String(page.headers['set-cookie']?.[0]).split(';')[0] as string;
    expect(cookie).toMatch(/^switchyard_console=/);
    expect((await raw(tcp(), '/v1/status', { cookie })).status).toBe(200);
  });
});

describe('startApi lifecycle', () => {
  it('replaces a stale socket file and removes the socket on close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-api-life-'));
    const path = join(dir, 'api.sock');
    writeFileSync(path, 'stale');
    const metrics = new AgentMetrics(
      {
        counters: () => Promise.resolve([]),
        conntrackEntries: () => Promise.resolve(0),
        flowStats: () => flows.stats(),
        describeRule: () => ({ kind: '', policy: '', action: '' }),
        policy: () => undefined,
        agent: () => ({ endpoints: 0, policies: 0 }),
      },
      { node: 'node-2', backend: 'nftables' },
    );
    const servers = await startApi({ agent, flows, metrics }, { socket: path });
    try {
      expect((await agentRequest<{ node: string }>(path, '/v1/status')).node).toBe('node-2');
    } finally {
      await servers.close();
    }
    expect(existsSync(path)).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('loopbackAddress', () => {
  it('parses loopback addresses', () => {
    expect(loopbackAddress('127.0.0.1:9464', '--metrics')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(loopbackAddress('127.1.2.3:1', '--metrics')).toEqual({ host: '127.1.2.3', port: 1 });
    expect(loopbackAddress('[::1]:8080', '--api')).toEqual({ host: '::1', port: 8080 });
    expect(loopbackAddress('localhost:65535', '--api')).toEqual({ host: 'localhost', port: 65535 });
  });

  it('takes port 0 (any free port) only where asked to', () => {
    expect(loopbackAddress('127.0.0.1:0', '--metrics', { anyPort: true })).toEqual({
      host: '127.0.0.1',
      port: 0,
    });
    expect(() => loopbackAddress('0.0.0.0:0', '--metrics', { anyPort: true })).toThrow(
      "--metrics must be a loopback address and port such as 127.0.0.1:9464 (port 0: any free port), not '0.0.0.0:0'",
    );
  });

  it('refuses anything else, naming the option and the value', () => {
    for (const value of [
      '0.0.0.0:9464',
      '10.0.0.1:9464',
      '192.168.1.1:80',
      '[::]:9464',
      'example.com:80',
      ':9464',
      '127.0.0.1',
      '127.0.0.1:0',
      '127.0.0.1:65536',
      '127.0.0.1:http',
      '127.0.0.1:9464/extra',
      'x127.0.0.1:9464',
    ]) {
      expect(() => loopbackAddress(value, '--metrics'), value).toThrow(
        `--metrics must be a loopback address and port such as 127.0.0.1:9464, not '${value}'`,
      );
    }
  });
});
