/**
 * The agent's local API: JSON over HTTP on a unix socket (file mode 0600: root only), and
 * optionally on 127.0.0.1 behind a bearer token (`Authorization: Bearer`, the session cookie, or
 * `?token=` for browsers' EventSource, which cannot set headers) and a Host header naming loopback
 * (src/util/http/auth.ts: no DNS rebinding). The CLI (`switchyard flows`, `switchyard node`), the
 * console and the lab talk to it; what each endpoint answers is in ./api-types.ts.
 *
 *   GET  /v1/status        what is in force, errors, repairs, flow counters
 *   GET  /v1/endpoints     this node's pods, their labels, the policies selecting them
 *   GET  /v1/policies      policies that select a pod on this node
 *   GET  /v1/flows         recent flows (?pod= &verdict= &policy= &limit=); &follow=1 streams
 *                          them as server-sent events
 *   GET  /v1/explain       ?from= &to= &port= &protocol= [&family=6]: which rule decides
 *   POST /v1/sync          re-read the desired state now
 *   GET  /metrics          Prometheus text
 */
import { tableSize } from '../ir/decision-table.js';
import { chmodSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { destinationHasPort, explain } from '../calc/index.js';
import { policyId, policyLabel, type PolicyRef, type Protocol } from '../ir/types.js';
import { matchesFilter, type Flow, type FlowFilter, type FlowTable } from '../observe/flows.js';
import type { AgentMetrics } from '../observe/metrics.js';
import {
  checkAccess,
  HttpError,
  isShellPath,
  isWebAppPath,
  openEventStream,
  redirectWithSessionCookie,
  sendEvent,
  sendFailure,
  sendError,
  sendJson,
  serveWebApp,
  type BoundAddress,
} from '../util/http/index.js';
import { errorMessage } from '../util/errors.js';
import type { Agent } from './agent.js';
import type {
  EndpointInfo,
  EndpointSide,
  EndpointsResponse,
  Explanation,
  FlowsResponse,
  PoliciesResponse,
  PolicyInfo,
  StatusResponse,
  SyncResponse,
} from './api-types.js';

export interface ApiContext {
  agent: Agent;
  flows: FlowTable;
  metrics: AgentMetrics;
}

const VERDICTS = new Set(['allow', 'deny', 'log', 'dropped']);
/** Streamed flows are batched: a flood of updates to one flow is sent once per interval. */
const STREAM_FLUSH_MS = 200;

function flowFilter(q: URLSearchParams): FlowFilter {
  const verdict = q.get('verdict') ?? undefined;
  if (verdict && !VERDICTS.has(verdict))
    throw new HttpError(400, `verdict must be allow, deny, log or dropped, not '${verdict}'`);
  return {
    ...(q.get('pod') ? { pod: q.get('pod') as string } : {}),
    ...(verdict ? { verdict: verdict as Flow['verdict'] } : {}),
    ...(q.get('policy') ? { policy: q.get('policy') as string } : {}),
  };
}

function endpoints(ctx: ApiContext): EndpointsResponse {
  const ir = ctx.agent.appliedIR;
  if (!ir) return [];
  const node = ctx.agent.target.node;
  return ir.endpoints
    .filter((e) => e.node === node)
    .map((e): EndpointInfo => {
      const side = (direction: 'ingress' | 'egress'): EndpointSide => {
        const rs = ir.ruleSets.find((r) => r.endpoint === e.id && r.direction === direction);
        return {
          globalPolicies: (rs?.globalPolicies ?? []).map(policyLabel),
          networkPolicies: (rs?.kubernetesPolicies ?? []).map(policyLabel),
          default: rs?.kubernetesDefault ?? 'allow',
          rules: (rs?.globalRules.length ?? 0) + (rs?.kubernetesRules.length ?? 0),
          decidedBy: rs?.table ? 'table' : 'walk',
          ...(rs?.table ? { tableEntries: tableSize(rs.table).entries } : {}),
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

interface FoundPolicy {
  ref: PolicyRef;
  selects: Set<string>;
  directions: Set<string>;
  rules: Set<string>;
}

function policies(ctx: ApiContext): PoliciesResponse {
  const ir = ctx.agent.appliedIR;
  if (!ir) return [];
  const local = new Set(ir.endpoints.filter((e) => e.node === ctx.agent.target.node).map((e) => e.id));
  const found = new Map<string, FoundPolicy>();
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
    .map((p): PolicyInfo => ({
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

function explainQuery(ctx: ApiContext, q: URLSearchParams): Explanation {
  const desired = ctx.agent.desiredState;
  const ir = ctx.agent.appliedIR;
  if (!desired?.model || !ir)
    throw new HttpError(409, 'this agent has no model to explain with (its source gives only an IR)');
  const from = q.get('from');
  const to = q.get('to');
  if (!from || !to)
    throw new HttpError(
      400,
      'explain needs ?from= and ?to= (namespace/pod, an address, outside:NAME, a service svc/NS/NAME:PORT, nodeport/NODE:PORT or lb/IP:PORT)',
    );
  const protocol = (q.get('protocol') ?? 'TCP').toUpperCase();
  if (!['TCP', 'UDP', 'SCTP', 'ICMP'].includes(protocol))
    throw new HttpError(400, `protocol must be TCP, UDP, SCTP or ICMP, not '${protocol}'`);
  const portText = q.get('port');
  const port = portText === null ? undefined : Number(portText);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    throw new HttpError(400, `port must be 1-65535, not '${portText}'`);
  // A service (`svc/NS/NAME:PORT`) or `IP:PORT` destination carries its port.
  if (protocol !== 'ICMP' && port === undefined && !destinationHasPort(to))
    throw new HttpError(400, `${protocol} needs ?port= (or a destination with one: svc/NS/NAME:PORT)`);
  const familyText = q.get('family');
  if (familyText !== null && familyText !== '4' && familyText !== '6')
    throw new HttpError(400, `family must be 4 or 6, not '${familyText}'`);
  try {
    return explain(desired.model, ir, {
      from,
      to,
      protocol: protocol as Protocol,
      ...(port ? { port } : {}),
      ...(familyText === '6' ? { family: 6 as const } : {}),
    });
  } catch (e) {
    throw new HttpError(400, errorMessage(e), { cause: e });
  }
}

function streamFlows(ctx: ApiContext, filter: FlowFilter, res: http.ServerResponse): void {
  openEventStream(res, 'switchyard flows');
  const pending = new Map<string, Flow>();
  const unsubscribe = ctx.flows.subscribe((f) => {
    if (matchesFilter(f, filter)) pending.set(f.key, f);
  });
  const timer = setInterval(() => {
    for (const f of pending.values()) sendEvent(res, 'flow', f);
    pending.clear();
  }, STREAM_FLUSH_MS);
  const close = (): void => {
    clearInterval(timer);
    unsubscribe();
  };
  res.on('close', close);
  res.on('error', close);
}

function flows(ctx: ApiContext, q: URLSearchParams, res: http.ServerResponse): void {
  const filter = flowFilter(q);
  if (q.get('follow') === '1' || q.get('follow') === 'true') return streamFlows(ctx, filter, res);
  const limit = Number(q.get('limit') ?? 1000);
  if (!Number.isInteger(limit) || limit < 1)
    throw new HttpError(400, 'limit must be a positive whole number');
  const body: FlowsResponse = {
    node: ctx.agent.target.node,
    flows: ctx.flows.list(filter, limit),
    stats: ctx.flows.stats(),
  };
  sendJson(res, body);
}

type Endpoint = (ctx: ApiContext, q: URLSearchParams, res: http.ServerResponse) => void | Promise<void>;

/** `METHOD /path` → what answers it. */
const ROUTES: Record<string, Endpoint> = {
  'GET /v1/status': (ctx, _q, res) => {
    const body: StatusResponse = { ...ctx.agent.status, flows: ctx.flows.stats() };
    sendJson(res, body);
  },
  'GET /v1/endpoints': (ctx, _q, res) => sendJson(res, endpoints(ctx)),
  'GET /v1/policies': (ctx, _q, res) => sendJson(res, policies(ctx)),
  'GET /v1/flows': flows,
  'GET /v1/explain': (ctx, q, res) => sendJson(res, explainQuery(ctx, q)),
  'POST /v1/sync': async (ctx, _q, res) => {
    await ctx.agent.syncNow();
    const body: SyncResponse = ctx.agent.status;
    sendJson(res, body);
  },
  'GET /metrics': async (ctx, _q, res) => {
    const text = await ctx.metrics.text();
    res.writeHead(200, { 'content-type': ctx.metrics.registry.contentType });
    res.end(text);
  },
};

async function route(
  ctx: ApiContext,
  req: http.IncomingMessage,
  url: URL,
  res: http.ServerResponse,
): Promise<void> {
  const key = `${req.method ?? 'GET'} ${url.pathname}`;
  const endpoint = ROUTES[key];
  if (!endpoint) throw new HttpError(404, `no such endpoint: ${key}`);
  await endpoint(ctx, url.searchParams, res);
}

/** The browser-facing TCP listener's token and where it is bound (for the Host check). */
interface TcpAccess {
  token: string;
  bound: () => BoundAddress;
}

/**
 * The web console's pages for this node (web/, in `agent` mode), on the TCP listener only; a
 * `?token=` on a page is traded for the session cookie (so EventSource works). False for anything
 * else (the API).
 */
function servePages(
  ctx: ApiContext,
  req: http.IncomingMessage,
  url: URL,
  res: http.ServerResponse,
  token: string,
): boolean {
  if (req.method !== 'GET' || !isWebAppPath(url.pathname)) return false;
  if (isShellPath(url.pathname) && url.searchParams.has('token')) {
    redirectWithSessionCookie(res, url, token);
    return true;
  }
  return serveWebApp(url.pathname, res, { mode: 'agent', title: `Switchyard · ${ctx.agent.target.node}` });
}

function handler(ctx: ApiContext, tcp?: TcpAccess): http.RequestListener {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    if (tcp) {
      const access = checkAccess(req, url, {
        token: tcp.token,
        bound: tcp.bound(),
        who: 'the agent',
        unauthorized: 'a valid token is required (Authorization: Bearer …)',
      });
      if (typeof access !== 'string') return sendError(res, access.status, access.message);
      if (servePages(ctx, req, url, res, tcp.token)) return;
    }
    route(ctx, req, url, res).catch((e: unknown) => sendFailure(res, e));
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
/** `anyPort`: port 0 is accepted, and means the kernel picks one. */
export function loopbackAddress(
  value: string,
  what: string,
  opts: { anyPort?: boolean } = {},
): { host: string; port: number } {
  const m = /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):(\d+)$/.exec(value);
  const port = Number(m?.[2]);
  const lowest = opts.anyPort ? 0 : 1;
  if (!m || !Number.isInteger(port) || port < lowest || port > 65535)
    throw new Error(
      `${what} must be a loopback address and port such as 127.0.0.1:9464${opts.anyPort ? ' (port 0: any free port)' : ''}, not '${value}'`,
    );
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
    const { host, token } = opts.tcp;
    const remote: http.Server = http.createServer(
      handler(ctx, {
        token,
        bound: (): BoundAddress => ({ host, port: (remote.address() as AddressInfo).port }),
      }),
    );
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

/**
 * A metrics-only listener (`--metrics 127.0.0.1:9464`): Prometheus scrapes without a token. With
 * a preferred port (port 0 asked, a port recorded before) that port is tried first.
 */
export async function startMetricsListener(
  metrics: AgentMetrics,
  address: { host: string; port: number; preferredPort?: number },
): Promise<ApiServers & { url: string }> {
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
        res.end(`${errorMessage(e)}\n`);
      });
  });
  const { host, port, preferredPort } = address;
  if (preferredPort === undefined) await listen(server, { host, port });
  else await listen(server, { host, port: preferredPort }).catch(() => listen(server, { host, port }));
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
