/**
 * `switchyard console`: the web console. Serves the browser bundle and a small JSON API that fans
 * out to the lab's agents (endpoints, policies, flows live as server-sent events, explanations),
 * measures the lab's reach matrix beside the one the evaluator predicts, and shows bench results
 * as charts with the advisor's recommendation. Loopback only, every request behind the token.
 *
 *   GET /api/info            lab, backend, nodes and their agents' status, the ports pods serve
 *   GET /api/endpoints       every node's pods, labels and the policies selecting them
 *   GET /api/policies        policies with the pods they select on every node
 *   GET /api/flows           recent flows of every node (?pod= &verdict= &policy= &limit=)
 *   GET /api/flows/stream    the same, live, as server-sent events
 *   GET /api/explain         ?from= &to= &port= &protocol= [&node=]: which policy and rule decide
 *   GET /api/reach           ?port= &protocol=: measured (real connections) and predicted matrix
 *   GET /api/bench           bench results, the advisor's recommendation
 *   GET /api/bench/chart     ?scenario=: one scenario's chart (SVG)
 */
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { advise, parseWorkload, workloadFromIR } from '../advise/index.js';
import { probeCapabilities } from '../advise/probe.js';
import { scenarioSvg, type BenchReport } from '../bench/results.js';
import { reachMatrix } from '../calc/index.js';
import * as fanout from './agents.js';
import type { AgentRef } from './agents.js';
import { authenticate, loopbackHost, sessionCookie } from './auth.js';
import { securityHeaders, serveConsoleAsset } from './static.js';

export interface ConsoleOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
  /** The agents to ask, looked up on every request (a lab's nodes come and go). */
  agents: () => AgentRef[];
  /** The lab for the reach matrix and the advisor's workload. */
  lab?: string;
  /** Bench results (`switchyard bench --json FILE`). */
  benchFile?: string;
}

export interface ConsoleServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export const DEFAULT_BENCH_FILE = fileURLToPath(
  new URL('../../docs/benchmarks/results.json', import.meta.url),
);

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;
const FLOW_FILTERS = ['pod', 'verdict', 'policy'];

function filterQuery(q: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams();
  for (const k of FLOW_FILTERS) {
    const v = q.get(k);
    if (v) out.set(k, v);
  }
  return out;
}

const lab = (): Promise<typeof import('../lab/index.js')> => import('../lab/index.js');
const labState = (): Promise<typeof import('../lab/state.js')> => import('../lab/state.js');

async function readyLab(name: string | undefined) {
  if (!name) throw new HttpError(404, 'the console was started without a lab (--lab NAME)');
  const state = (await labState()).readState(name);
  if (!state?.topology || state.status !== 'ready')
    throw new HttpError(409, `lab '${name}' is ${state ? state.status : 'not up'}`);
  return { ...state, topology: state.topology };
}

function servedPorts(
  pods: { ports: { port: number; protocol: string }[] }[],
): { port: number; protocol: string }[] {
  const seen = new Map<string, { port: number; protocol: string }>();
  for (const p of pods)
    for (const x of p.ports)
      if (x.protocol === 'TCP' || x.protocol === 'UDP') seen.set(`${x.protocol}/${x.port}`, x);
  return [...seen.values()].sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
}

async function info(opts: ConsoleOptions): Promise<unknown> {
  let agents: AgentRef[] = [];
  let agentError: string | undefined;
  try {
    agents = opts.agents();
  } catch (e) {
    agentError = (e as Error).message;
  }
  const status = await fanout.statuses(agents);
  let labInfo: unknown;
  if (opts.lab) {
    const s = (await labState()).readState(opts.lab);
    labInfo = s
      ? {
          name: s.name,
          status: s.status,
          backend: s.backend,
          revision: s.revision,
          nodes: s.topology?.nodes.map((n) => n.name) ?? [],
          pods: s.topology?.pods.map((p) => ({ id: p.id, node: p.node, address: p.address })) ?? [],
          ports: servedPorts(s.topology?.pods ?? []),
        }
      : { name: opts.lab, status: 'not up' };
  }
  return {
    lab: labInfo,
    agents: status.items,
    errors: [...status.errors, ...(agentError ? [{ node: '-', error: agentError }] : [])],
    bench: existsSync(opts.benchFile ?? DEFAULT_BENCH_FILE),
  };
}

async function reach(opts: ConsoleOptions, q: URLSearchParams): Promise<unknown> {
  const state = await readyLab(opts.lab);
  const port = Number(q.get('port') ?? servedPorts(state.topology.pods)[0]?.port ?? 80);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new HttpError(400, 'port must be 1-65535');
  const protocol = (q.get('protocol') ?? 'TCP').toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP') throw new HttpError(400, 'protocol must be TCP or UDP');
  const measured = await (await lab()).measureReach(state.name, { port, protocol });
  const predicted = reachMatrix(state.ir, port, protocol);
  return {
    lab: state.name,
    backend: state.backend,
    port,
    protocol,
    measured: measured.matrix,
    predicted,
    durationMs: measured.durationMs,
  };
}

function readBench(opts: ConsoleOptions): { file: string; report: BenchReport } {
  const file = opts.benchFile ?? DEFAULT_BENCH_FILE;
  let report: BenchReport;
  try {
    report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  } catch (e) {
    throw new HttpError(404, `no bench results in ${file}: ${(e as Error).message}`);
  }
  if (!Array.isArray(report.scenarios))
    throw new HttpError(422, `${file} is not a bench report (no scenarios)`);
  return { file, report };
}

const ADVISOR_SCENARIOS = ['policy', 'set-update', 'services', 'prefilter', 'observe'];
const rank = (name: string): number => {
  const i = ADVISOR_SCENARIOS.indexOf(name);
  return i < 0 ? ADVISOR_SCENARIOS.length : i;
};

async function bench(opts: ConsoleOptions): Promise<unknown> {
  const { file, report } = readBench(opts);
  let workloadFrom = 'defaults';
  let input = {};
  if (opts.lab) {
    const s = (await labState()).readState(opts.lab);
    if (s) {
      input = workloadFromIR(s.ir);
      workloadFrom = `lab ${opts.lab}`;
    }
  }
  const workload = parseWorkload(input);
  return {
    file: relative(process.cwd(), file).startsWith('..') ? file : relative(process.cwd(), file),
    machine: report.machine,
    // The scenarios the advisor reads first, then the rest as the file orders them.
    scenarios: [...report.scenarios]
      .sort((a, b) => rank(a.name) - rank(b.name))
      .map((s) => ({
        name: s.name,
        unit: s.unit,
        better: s.better,
        backends: [...new Set(s.rows.map((r) => r.backend))],
        notes: s.notes ?? [],
      })),
    workloadFrom,
    workload,
    advice: advise(workload, report, probeCapabilities()),
  };
}

async function route(
  opts: ConsoleOptions,
  url: URL,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const q = url.searchParams;
  const json = (value: unknown): void => {
    res.writeHead(200, securityHeaders({ 'content-type': 'application/json' }));
    res.end(JSON.stringify(value));
  };
  const agents = (): AgentRef[] => {
    try {
      return opts.agents();
    } catch (e) {
      throw new HttpError(503, (e as Error).message);
    }
  };
  switch (url.pathname) {
    case '/api/info':
      return json(await info(opts));
    case '/api/endpoints':
      return json(await fanout.endpoints(agents()));
    case '/api/policies':
      return json(await fanout.policies(agents()));
    case '/api/flows': {
      const limit = Number(q.get('limit') ?? 500);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
        throw new HttpError(400, 'limit must be 1-10000');
      return json(await fanout.flows(agents(), filterQuery(q), limit));
    }
    case '/api/flows/stream': {
      res.writeHead(
        200,
        securityHeaders({
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        }),
      );
      res.write(': switchyard console flows\n\n');
      const abort = new AbortController();
      const send = (event: string, data: unknown): void => {
        if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      fanout.followFlows(
        opts.agents,
        filterQuery(q),
        (f) => send('flow', f),
        (e) => send('node-error', e),
        abort.signal,
      );
      const heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
      const stop = (): void => {
        clearInterval(heartbeat);
        abort.abort();
      };
      req.on('close', stop);
      res.on('error', stop);
      return;
    }
    case '/api/explain': {
      const forward = new URLSearchParams();
      for (const k of ['from', 'to', 'port', 'protocol']) {
        const v = q.get(k);
        if (v) forward.set(k, v);
      }
      try {
        return json(await fanout.explain(agents(), q.get('node') ?? undefined, forward));
      } catch (e) {
        throw new HttpError(400, (e as Error).message);
      }
    }
    case '/api/reach':
      return json(await reach(opts, q));
    case '/api/bench':
      return json(await bench(opts));
    case '/api/bench/chart': {
      const { report } = readBench(opts);
      const s = report.scenarios.find((x) => x.name === q.get('scenario'));
      if (!s) throw new HttpError(404, `no scenario '${q.get('scenario') ?? ''}' in the bench results`);
      res.writeHead(200, {
        ...securityHeaders({ 'content-type': 'image/svg+xml' }),
        'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
      });
      res.end(scenarioSvg(s));
      return;
    }
    default:
      if (
        serveConsoleAsset(url.pathname, res, {
          mode: 'console',
          title: `Switchyard console${opts.lab ? ` · ${opts.lab}` : ''}`,
        })
      )
        return;
      throw new HttpError(404, `no such page: ${url.pathname}`);
  }
}

function handler(opts: ConsoleOptions, port: () => number): http.RequestListener {
  return (req, res) => {
    const fail = (status: number, message: string): void => {
      if (!res.headersSent) res.writeHead(status, securityHeaders({ 'content-type': 'application/json' }));
      res.end(JSON.stringify({ error: message }));
    };
    if (!loopbackHost(req.headers.host, port()))
      return fail(421, 'the console answers only to 127.0.0.1/localhost');
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'the console is read-only (GET)');
    const url = new URL(req.url ?? '/', 'http://console');
    const how = authenticate(req, url, opts.token);
    if (!how) {
      res.setHeader('www-authenticate', 'Bearer realm="switchyard console"');
      return fail(401, 'a valid token is required: open the link `switchyard console` printed');
    }
    if (how === 'query' && !url.pathname.startsWith('/api/')) {
      // Trade the token in the address bar for an HttpOnly cookie (EventSource and <img> send it).
      url.searchParams.delete('token');
      res.writeHead(303, {
        'set-cookie': sessionCookie(opts.token),
        location: `${url.pathname}${url.search}`,
      });
      res.end();
      return;
    }
    route(opts, url, req, res).catch((e: unknown) =>
      fail(e instanceof HttpError ? e.status : 500, (e as Error).message),
    );
  };
}

export async function startConsole(opts: ConsoleOptions): Promise<ConsoleServer> {
  if (!LOOPBACK.test(opts.host))
    throw new Error(`the console serves only on a loopback address, not '${opts.host}'`);
  if (opts.token.length < 16) throw new Error('the console token must be 16 characters at least');
  let port = opts.port;
  const server = http.createServer(handler(opts, () => port));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  const host = opts.host === '::1' ? '[::1]' : opts.host;
  return {
    url: `http://${host}:${port}/`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
