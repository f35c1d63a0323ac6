/**
 * The agent's local API: JSON over HTTP on a unix socket (file mode 0600: root only), and
 * optionally on 127.0.0.1 behind a bearer token (`Authorization: Bearer`, or `?token=` for
 * browsers' EventSource, which cannot set headers). The CLI (`switchyard flows`, `switchyard node`)
 * and the lab talk to it.
 *
 *   GET  /v1/status        what is in force, errors, repairs, flow counters
 *   GET  /v1/endpoints     this node's pods, their labels, the policies selecting them
 *   GET  /v1/policies      policies that select a pod on this node
 *   GET  /v1/flows         recent flows (?pod= &verdict= &policy= &limit=); &follow=1 streams
 *                          them as server-sent events
 *   GET  /v1/explain       ?from= &to= &port= &protocol=: which rule decides
 *   POST /v1/sync          re-read the desired state now
 *   GET  /metrics          Prometheus text
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { chmodSync, rmSync } from 'node:fs';
import http from 'node:http';
import { explain } from '../calc/index.js';
import { COOKIE, cookieValue } from '../console/auth.js';
import { serveAgentConsole } from '../console/static.js';
import { policyId, policyLabel, type PolicyRef, type Protocol } from '../ir/types.js';
import { matchesFilter, type Flow, type FlowFilter, type FlowTable } from '../observe/flows.js';
import type { AgentMetrics } from '../observe/metrics.js';
import type { Agent } from './agent.js';

export interface ApiContext {
  agent: Agent;
  flows: FlowTable;
  metrics: AgentMetrics;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const VERDICTS = new Set(['allow', 'deny', 'log']);
/** Streamed flows are batched: a flood of updates to one flow is sent once per interval. */
const STREAM_FLUSH_MS = 200;

function flowFilter(q: URLSearchParams): FlowFilter {
  const verdict = q.get('verdict') ?? undefined;
  if (verdict && !VERDICTS.has(verdict))
    throw new HttpError(400, `verdict must be allow, deny or log, not '${verdict}'`);
  return {
    ...(q.get('pod') ? { pod: q.get('pod') as string } : {}),
    ...(verdict ? { verdict: verdict as Flow['verdict'] } : {}),
    ...(q.get('policy') ? { policy: q.get('policy') as string } : {}),
  };
}

function endpoints(ctx: ApiContext): unknown[] {
  const ir = ctx.agent.appliedIR;
  if (!ir) return [];
  const node = ctx.agent.target.node;
  return ir.endpoints
    .filter((e) => e.node === node)
    .map((e) => {
      const side = (direction: 'ingress' | 'egress'): unknown => {
        const rs = ir.ruleSets.find((r) => r.endpoint === e.id && r.direction === direction);
        return {
          globalPolicies: (rs?.globalPolicies ?? []).map(policyLabel),
          networkPolicies: (rs?.kubernetesPolicies ?? []).map(policyLabel),
          default: rs?.kubernetesDefault ?? 'allow',
          rules: (rs?.globalRules.length ?? 0) + (rs?.kubernetesRules.length ?? 0),
        };
      };
      return {
        id: e.id,
        addresses: e.addresses,
        labels: e.labels,
        namespaceLabels: e.namespaceLabels,
        ports: e.ports,
        interface: e.hostInterface,
        ingress: side('ingress'),
        egress: side('egress'),
      };
    });
}

function policies(ctx: ApiContext): unknown[] {
  const ir = ctx.agent.appliedIR;
  if (!ir) return [];
  const local = new Set(ir.endpoints.filter((e) => e.node === ctx.agent.target.node).map((e) => e.id));
  const found = new Map<
    string,
    { ref: PolicyRef; selects: Set<string>; directions: Set<string>; rules: Set<string> }
  >();
  for (const rs of ir.ruleSets) {
    if (!local.has(rs.endpoint)) continue;
    for (const ref of [...rs.globalPolicies, ...rs.kubernetesPolicies]) {
      const id = policyId(ref);
      let p = found.get(id);
      if (!p) found.set(id, (p = { ref, selects: new Set(), directions: new Set(), rules: new Set() }));
      p.selects.add(rs.endpoint);
      p.directions.add(rs.direction);
      for (const r of [...rs.globalRules, ...rs.kubernetesRules])
        if (policyId(r.policy) === id) p.rules.add(r.id);
    }
  }
  return [...found.values()]
    .map((p) => ({
      policy: policyLabel(p.ref),
      kind: p.ref.kind,
      ...(p.ref.namespace ? { namespace: p.ref.namespace } : {}),
      name: p.ref.name,
      directions: [...p.directions].sort(),
      selects: [...p.selects].sort(),
      rules: [...p.rules].sort(),
    }))
    .sort((a, b) => (a.policy < b.policy ? -1 : 1));
}

function explainQuery(ctx: ApiContext, q: URLSearchParams): unknown {
  const desired = ctx.agent.desiredState;
  const ir = ctx.agent.appliedIR;
  if (!desired?.model || !ir)
    throw new HttpError(409, 'this agent has no model to explain with (its source gives only an IR)');
  const from = q.get('from');
  const to = q.get('to');
  if (!from || !to) throw new HttpError(400, 'explain needs ?from= and ?to= (namespace/pod or an address)');
  const protocol = (q.get('protocol') ?? 'TCP').toUpperCase();
  if (!['TCP', 'UDP', 'SCTP', 'ICMP'].includes(protocol))
    throw new HttpError(400, `protocol must be TCP, UDP, SCTP or ICMP, not '${protocol}'`);
  const portText = q.get('port');
  const port = portText === null ? undefined : Number(portText);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    throw new HttpError(400, `port must be 1-65535, not '${portText}'`);
  if (protocol !== 'ICMP' && port === undefined) throw new HttpError(400, `${protocol} needs ?port=`);
  try {
    return explain(desired.model, ir, {
      from,
      to,
      protocol: protocol as Protocol,
      ...(port ? { port } : {}),
    });
  } catch (e) {
    throw new HttpError(400, (e as Error).message);
  }
}

function streamFlows(ctx: ApiContext, filter: FlowFilter, res: http.ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  res.write(': switchyard flows\n\n');
  const pending = new Map<string, Flow>();
  const unsubscribe = ctx.flows.subscribe((f) => {
    if (matchesFilter(f, filter)) pending.set(f.key, f);
  });
  const timer = setInterval(() => {
    for (const f of pending.values()) res.write(`event: flow\ndata: ${JSON.stringify(f)}\n\n`);
    pending.clear();
  }, STREAM_FLUSH_MS);
  const close = (): void => {
    clearInterval(timer);
    unsubscribe();
  };
  res.on('close', close);
  res.on('error', close);
}

async function route(ctx: ApiContext, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://agent');
  const q = url.searchParams;
  const json = (value: unknown): void => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  const key = `${req.method ?? 'GET'} ${url.pathname}`;
  switch (key) {
    case 'GET /v1/status':
      return json({ ...ctx.agent.status, flows: ctx.flows.stats() });
    case 'GET /v1/endpoints':
      return json(endpoints(ctx));
    case 'GET /v1/policies':
      return json(policies(ctx));
    case 'GET /v1/flows': {
      const filter = flowFilter(q);
      if (q.get('follow') === '1' || q.get('follow') === 'true') return streamFlows(ctx, filter, res);
      const limit = Number(q.get('limit') ?? 1000);
      if (!Number.isInteger(limit) || limit < 1)
        throw new HttpError(400, 'limit must be a positive whole number');
      return json({
        node: ctx.agent.target.node,
        flows: ctx.flows.list(filter, limit),
        stats: ctx.flows.stats(),
      });
    }
    case 'GET /v1/explain':
      return json(explainQuery(ctx, q));
    case 'POST /v1/sync':
      await ctx.agent.syncNow();
      return json(ctx.agent.status);
    case 'GET /metrics': {
      const text = await ctx.metrics.text();
      res.writeHead(200, { 'content-type': ctx.metrics.registry.contentType });
      res.end(text);
      return;
    }
    default:
      throw new HttpError(404, `no such endpoint: ${key}`);
  }
}

function sameToken(given: string, token: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

function handler(ctx: ApiContext, token?: string): http.RequestListener {
  return (req, res) => {
    if (token !== undefined) {
      const url = new URL(req.url ?? '/', 'http://agent');
      const given =
        req.headers.authorization?.replace(/^Bearer\s+/i, '') ??
        url.searchParams.get('token') ??
        cookieValue(req.headers.cookie, COOKIE);
      if (!sameToken(given ?? '', token)) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'a valid token is required (Authorization: Bearer …)' }));
        return;
      }
    }
    // The web console's pages for this node (src/console), on the TCP listener only.
    if (token !== undefined && serveAgentConsole(req, res, token, ctx.agent.target.node)) return;
    route(ctx, req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: (e as Error).message }));
    });
  };
}

function listen(server: http.Server, target: string | { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (typeof target === 'string') server.listen(target, done);
    else server.listen(target.port, target.host, done);
  });
}

export interface ApiServers {
  close(): Promise<void>;
}

/** Parses `127.0.0.1:PORT`; anything but a loopback address is refused. */
export function loopbackAddress(value: string, what: string): { host: string; port: number } {
  const m = /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):(\d+)$/.exec(value);
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`${what} must be a loopback address and port such as 127.0.0.1:9464, not '${value}'`);
  return { host: m[1] === '[::1]' ? '::1' : (m[1] as string), port };
}

export async function startApi(
  ctx: ApiContext,
  opts: { socket: string; tcp?: { host: string; port: number; token: string } },
): Promise<ApiServers> {
  const servers: http.Server[] = [];
  rmSync(opts.socket, { force: true });
  const local = http.createServer(handler(ctx));
  await listen(local, opts.socket);
  chmodSync(opts.socket, 0o600);
  servers.push(local);
  if (opts.tcp) {
    const remote = http.createServer(handler(ctx, opts.tcp.token));
    await listen(remote, opts.tcp);
    servers.push(remote);
  }
  return {
    close: () =>
      Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.closeAllConnections();
              s.close(() => resolve());
            }),
        ),
      ).then(() => rmSync(opts.socket, { force: true })),
  };
}

/** A metrics-only listener (`--metrics 127.0.0.1:9464`): Prometheus scrapes without a token. */
export async function startMetricsListener(
  metrics: AgentMetrics,
  address: { host: string; port: number },
): Promise<ApiServers> {
  const server = http.createServer((req, res) => {
    if (!req.url?.startsWith('/metrics')) {
      res.writeHead(404);
      res.end('metrics are at /metrics\n');
      return;
    }
    metrics
      .text()
      .then((text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(text);
      })
      .catch((e: unknown) => {
        res.writeHead(500);
        res.end(`${(e as Error).message}\n`);
      });
  });
  await listen(server, address);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
