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
 *   GET /api/explain         ?from= &to= &port= &protocol= [&family=6] [&node=]: which policy and rule decide
 *   GET /api/reach           ?port= &protocol= [&measure=0]: measured (real connections) and predicted
 *   GET /api/services        the lab's services: ClusterIP, port, the pods behind it
 *   GET /api/prefilters      the lab's prefilters: nodes and deny-listed CIDRs
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
import { paletteFor, scenarioSvg, type BenchReport } from '../bench/results.js';
import { reachMatrix, servesPort } from '../calc/index.js';
import { errorMessage } from '../util/errors.js';
import {
  checkAccess,
  HttpError,
  isLoopbackName,
  openEventStream,
  redirectWithSessionCookie,
  securityHeaders,
  sendError,
  sendEvent,
  sendFailure,
  sendJson,
  serveWebApp,
} from '../util/http/index.js';
import * as fanout from './agents.js';
import type { AgentRef } from './agents.js';
import type {
  BenchResponse,
  InfoResponse,
  LabInfo,
  PrefiltersResponse,
  ReachResponse,
  ServicesResponse,
} from './api-types.js';

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
  /** Every scenario `switchyard bench` knows: those the file lacks are listed as missing. */
  benchScenarios?: readonly string[];
}

export interface ConsoleServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export const DEFAULT_BENCH_FILE = fileURLToPath(
  new URL('../../docs/benchmarks/results.json', import.meta.url),
);

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

async function labInfo(name: string): Promise<LabInfo> {
  const s = (await labState()).readState(name);
  if (!s) return { name, status: 'not up' };
  return {
    name: s.name,
    status: s.status,
    backend: s.backend,
    revision: s.revision,
    nodes: s.topology?.nodes.map((n) => n.name) ?? [],
    pods: s.topology?.pods.map((p) => ({ id: p.id, node: p.node, address: p.address })) ?? [],
    ports: servedPorts(s.topology?.pods ?? []),
  };
}

async function info(opts: ConsoleOptions): Promise<InfoResponse> {
  let agents: AgentRef[] = [];
  let agentError: string | undefined;
  try {
    agents = opts.agents();
  } catch (e) {
    agentError = errorMessage(e);
  }
  const status = await fanout.statuses(agents);
  return {
    ...(opts.lab ? { lab: await labInfo(opts.lab) } : {}),
    agents: status.items,
    errors: [...status.errors, ...(agentError ? [{ node: '-', error: agentError }] : [])],
    bench: existsSync(opts.benchFile ?? DEFAULT_BENCH_FILE),
  };
}

async function reach(opts: ConsoleOptions, q: URLSearchParams): Promise<ReachResponse> {
  const state = await readyLab(opts.lab);
  const port = Number(q.get('port') ?? servedPorts(state.topology.pods)[0]?.port ?? 80);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new HttpError(400, 'port must be 1-65535');
  const protocol = (q.get('protocol') ?? 'TCP').toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP') throw new HttpError(400, 'protocol must be TCP or UDP');
  const predicted = reachMatrix(state.ir, port, protocol);
  const served = Object.fromEntries(state.ir.endpoints.map((e) => [e.id, servesPort(e, port, protocol)]));
  const base = { lab: state.name, backend: state.backend, port, protocol, predicted, served } as const;
  // Measuring opens a connection from every pod to every pod: only when asked (the page's button).
  if (q.get('measure') === '0') return { ...base, durationMs: 0 };
  const measured = await (await lab()).measureReach(state.name, { port, protocol });
  return { ...base, measured: measured.matrix, durationMs: measured.durationMs };
}

/** The lab's services as compiled (what every node's dataplane balances). */
async function services(opts: ConsoleOptions): Promise<ServicesResponse> {
  const state = await readyLab(opts.lab);
  const nodeOf = new Map(state.ir.endpoints.map((e) => [e.id, e.node]));
  return {
    lab: state.name,
    items: state.ir.services.map((t) => ({
      service: t.service,
      ...(t.portName ? { portName: t.portName } : {}),
      address: t.address,
      port: t.port,
      protocol: t.protocol,
      backends: t.backends.map((b) => ({
        ...b,
        ...(nodeOf.has(b.endpoint) ? { node: nodeOf.get(b.endpoint) } : {}),
      })),
      affinity: t.affinity.mode === 'ClientIP' ? `ClientIP (${t.affinity.timeoutSeconds} s)` : 'None',
    })),
  };
}

/** The lab's prefilters and the CIDRs each drops before conntrack. */
async function prefilters(opts: ConsoleOptions): Promise<PrefiltersResponse> {
  const state = await readyLab(opts.lab);
  const sets = new Map(state.ir.ipSets.map((s) => [s.id, s.cidrs]));
  return {
    lab: state.name,
    items: state.ir.prefilters.map((p) => ({ ...p, cidrs: sets.get(p.set) ?? [] })),
  };
}

function readBench(opts: ConsoleOptions): { file: string; report: BenchReport } {
  const file = opts.benchFile ?? DEFAULT_BENCH_FILE;
  let report: BenchReport;
  try {
    report = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  } catch (e) {
    throw new HttpError(404, `no bench results in ${file}: ${errorMessage(e)}`, { cause: e });
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

async function bench(opts: ConsoleOptions): Promise<BenchResponse> {
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
  const inFile = new Set(report.scenarios.map((s) => s.name));
  return {
    file: relative(process.cwd(), file).startsWith('..') ? file : relative(process.cwd(), file),
    machine: report.machine,
    missing: (opts.benchScenarios ?? []).filter((n) => !inFile.has(n)),
    colors: paletteFor(report.scenarios.flatMap((s) => s.rows.map((r) => r.backend))),
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

/** What a handler gets: the options, the request's query, the request and the response. */
interface Call {
  opts: ConsoleOptions;
  q: URLSearchParams;
  req: http.IncomingMessage;
  res: http.ServerResponse;
}

const json = (res: http.ServerResponse, value: unknown): void => sendJson(res, value, securityHeaders());

/** The agents to ask; none known (a lab being rebuilt) is a 503. */
function agentsOf(opts: ConsoleOptions): AgentRef[] {
  try {
    return opts.agents();
  } catch (e) {
    throw new HttpError(503, errorMessage(e), { cause: e });
  }
}

async function flows({ opts, q, res }: Call): Promise<void> {
  const limit = Number(q.get('limit') ?? 500);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
    throw new HttpError(400, 'limit must be 1-10000');
  json(res, await fanout.flows(agentsOf(opts), filterQuery(q), limit));
}

/** Every agent's flows, live, until the browser goes away. */
function flowStream({ opts, q, req, res }: Call): void {
  openEventStream(res, 'switchyard console flows', securityHeaders());
  const abort = new AbortController();
  fanout.followFlows(
    opts.agents,
    filterQuery(q),
    (f) => sendEvent(res, 'flow', f),
    (e) => sendEvent(res, 'node-error', e),
    abort.signal,
  );
  const heartbeat = setInterval(() => res.write(': ping\n\n'), 15_000);
  const stop = (): void => {
    clearInterval(heartbeat);
    abort.abort();
  };
  req.on('close', stop);
  res.on('error', stop);
}

async function explainPair({ opts, q, res }: Call): Promise<void> {
  const forward = new URLSearchParams();
  for (const k of ['from', 'to', 'port', 'protocol', 'family']) {
    const v = q.get(k);
    if (v) forward.set(k, v);
  }
  try {
    json(res, await fanout.explain(agentsOf(opts), q.get('node') ?? undefined, forward));
  } catch (e) {
    throw new HttpError(400, errorMessage(e), { cause: e });
  }
}

function benchChart({ opts, q, res }: Call): void {
  const { report } = readBench(opts);
  const s = report.scenarios.find((x) => x.name === q.get('scenario'));
  if (!s) throw new HttpError(404, `no scenario '${q.get('scenario') ?? ''}' in the bench results`);
  res.writeHead(200, {
    ...securityHeaders({ 'content-type': 'image/svg+xml' }),
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
  });
  res.end(scenarioSvg(s));
}

/** Path → what answers it (GET); anything else is a page of the web app, or 404. */
const ROUTES: Record<string, (call: Call) => void | Promise<void>> = {
  '/api/info': async ({ opts, res }) => json(res, await info(opts)),
  '/api/endpoints': async ({ opts, res }) => json(res, await fanout.endpoints(agentsOf(opts))),
  '/api/policies': async ({ opts, res }) => json(res, await fanout.policies(agentsOf(opts))),
  '/api/flows': flows,
  '/api/flows/stream': flowStream,
  '/api/explain': explainPair,
  '/api/reach': async ({ opts, q, res }) => json(res, await reach(opts, q)),
  '/api/services': async ({ opts, res }) => json(res, await services(opts)),
  '/api/prefilters': async ({ opts, res }) => json(res, await prefilters(opts)),
  '/api/bench': async ({ opts, res }) => json(res, await bench(opts)),
  '/api/bench/chart': benchChart,
};

async function route(call: Call, pathname: string): Promise<void> {
  const handle = ROUTES[pathname];
  if (handle) return handle(call);
  const title = `Switchyard console${call.opts.lab ? ` · ${call.opts.lab}` : ''}`;
  if (!serveWebApp(pathname, call.res, { mode: 'console', title }))
    throw new HttpError(404, `no such page: ${pathname}`);
}

function handler(opts: ConsoleOptions, port: () => number): http.RequestListener {
  return (req, res) => {
    const fail = (status: number, message: string): void =>
      sendError(res, status, message, securityHeaders());
    const url = new URL(req.url ?? '/', 'http://console');
    const access = checkAccess(req, url, {
      token: opts.token,
      bound: { host: opts.host, port: port() },
      who: 'the console',
      unauthorized: 'a valid token is required: open the link `switchyard console` printed',
    });
    if (typeof access !== 'string') {
      if (access.status === 401) res.setHeader('www-authenticate', 'Bearer realm="switchyard console"');
      return fail(access.status, access.message);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'the console is read-only (GET)');
    // Trade the token in the address bar for an HttpOnly cookie (EventSource and <img> send it).
    if (access === 'query' && !url.pathname.startsWith('/api/'))
      return redirectWithSessionCookie(res, url, opts.token);
    route({ opts, q: url.searchParams, req, res }, url.pathname).catch((e: unknown) =>
      sendFailure(res, e, securityHeaders()),
    );
  };
}

export async function startConsole(opts: ConsoleOptions): Promise<ConsoleServer> {
  if (!isLoopbackName(opts.host))
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
