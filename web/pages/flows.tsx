/** Live flows: the recent ones, then every update streamed (server-sent events), filterable. */
import { useEffect, useMemo, useState } from 'preact/hooks';
import {
  flowStreamUrl,
  get,
  type EndpointsResponse,
  type Flow,
  type Merged,
  type NodeError,
} from '../api.js';
import { familyOf, href, withPort } from '../route.js';
import { NodeErrors, Problem, useApi } from './common.js';

const MAX_FLOWS = 5000;
/** Rows per page; more are a click away ("show N more"), so a burst of flows never renders thousands. */
const PAGE = 300;

type Filter = { pod: string; verdict: string; policy: string; rows?: string };

/** The agent's own filter (src/observe/flows.ts matchesFilter), applied in the browser. */
function matches(f: Flow, filter: Filter): boolean {
  if (filter.verdict && f.verdict !== filter.verdict) return false;
  if (filter.pod && f.endpoint !== filter.pod && f.process?.pod !== filter.pod) return false;
  if (filter.policy && !(f.policy?.includes(filter.policy) || f.rule.includes(filter.policy))) return false;
  return true;
}

const id = (f: Flow): string => `${f.node}|${f.key}`;

const VERDICTS = ['allow', 'deny', 'log', 'dropped'];

/** One filter chosen from a list, `all` (empty) first. */
function FilterSelect(props: {
  name: keyof Filter;
  value: string;
  choices: readonly string[];
  onChange: (value: string) => void;
}) {
  return (
    <label>
      {props.name}
      <select
        name={props.name}
        value={props.value}
        onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}
      >
        <option value="">all</option>
        {props.choices.map((c) => (
          <option value={c}>{c}</option>
        ))}
      </select>
    </label>
  );
}

export function FlowsPage({ params }: { params: URLSearchParams }) {
  const filter: Filter = {
    pod: params.get('pod') ?? '',
    verdict: params.get('verdict') ?? '',
    policy: params.get('policy') ?? '',
    rows: params.get('rows') ?? undefined,
  };
  const page = Math.max(1, Number(filter.rows) || PAGE);
  const [pages, setPages] = useState(1);
  useEffect(() => setPages(1), [filter.pod, filter.verdict, filter.policy]);
  const [flows, setFlows] = useState(() => new Map<string, Flow>());
  const [fresh, setFresh] = useState(() => new Set<string>());
  const [live, setLive] = useState<'connecting' | 'live' | 'reconnecting'>('connecting');
  const [errors, setErrors] = useState<NodeError[]>([]);
  const [error, setError] = useState<string>();
  const eps = useApi<EndpointsResponse>('/api/endpoints');

  const podOf = useMemo(() => {
    const m = new Map<string, string>();
    for (const e of eps.data?.items ?? []) for (const a of e.addresses) m.set(a, e.id);
    return m;
  }, [eps.data]);

  useEffect(() => {
    let closed = false;
    const source = new EventSource(flowStreamUrl());
    let pending: Flow[] = [];
    // Apply events at most every 100 ms: a burst re-renders once.
    const flush = setInterval(() => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      setFlows((old) => {
        const next = new Map(old);
        for (const f of batch) {
          next.delete(id(f));
          next.set(id(f), f);
        }
        while (next.size > MAX_FLOWS) next.delete(next.keys().next().value as string);
        return next;
      });
      setFresh(new Set(batch.map(id)));
    }, 100);
    source.addEventListener('open', () => setLive('live'));
    source.addEventListener('error', () => !closed && setLive('reconnecting'));
    source.addEventListener('flow', (e) =>
      pending.push(JSON.parse((e as MessageEvent<string>).data) as Flow),
    );
    source.addEventListener('node-error', (e) =>
      setErrors((old) => [...old.slice(-4), JSON.parse((e as MessageEvent<string>).data) as NodeError]),
    );
    get<Merged<Flow>>('/api/flows?limit=1000').then(
      (r) => {
        setFlows((old) => {
          const next = new Map<string, Flow>();
          for (const f of [...r.items].reverse()) next.set(id(f), f);
          for (const [k, f] of old) next.set(k, f);
          return next;
        });
        if (r.errors.length) setErrors(r.errors);
      },
      (e: Error) => setError(e.message),
    );
    return () => {
      closed = true;
      clearInterval(flush);
      source.close();
    };
  }, []);

  const setFilter = (change: Partial<Filter>): void => {
    const next = { ...filter, ...change };
    location.hash = href('flows', next);
  };

  // Newest connection first; a flow whose counters change keeps its row (no reshuffling).
  const all = [...flows.values()].sort((a, b) =>
    a.firstSeen === b.firstSeen ? id(a).localeCompare(id(b)) : a.firstSeen < b.firstSeen ? 1 : -1,
  );
  const matching = all.filter((f) => matches(f, filter));
  const shown = matching.slice(0, page * pages);
  const filtered = Boolean(filter.pod || filter.verdict || filter.policy);
  const name = (addr: string, port: number) => {
    const pod = podOf.get(addr);
    return (
      <span title={port ? withPort(addr, port) : addr}>
        {pod ? <b>{pod}</b> : <span class="mono">{port && addr.includes(':') ? `[${addr}]` : addr}</span>}
        {port !== 0 && <span class="muted">:{port}</span>}
      </span>
    );
  };
  const pods = [...new Set((eps.data?.items ?? []).map((e) => e.id))].sort();
  return (
    <section>
      <h1>
        Flows{' '}
        <span class={`live ${live}`} data-testid="live">
          {live}
        </span>
      </h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <FilterSelect name="pod" value={filter.pod} choices={pods} onChange={(pod) => setFilter({ pod })} />
        <FilterSelect
          name="verdict"
          value={filter.verdict}
          choices={VERDICTS}
          onChange={(verdict) => setFilter({ verdict })}
        />
        <label>
          policy
          <input
            name="policy"
            type="search"
            placeholder="policy or rule id contains…"
            value={filter.policy}
            onChange={(e) => setFilter({ policy: (e.target as HTMLInputElement).value })}
          />
        </label>
        <span class="muted" data-testid="flow-count">
          showing {shown.length} of {matching.length}{' '}
          {filtered ? `matching flows (${all.length} in all)` : 'flows'}
        </span>
      </form>
      {error && <Problem>{error}</Problem>}
      <NodeErrors errors={errors} />
      <div class="table-scroll">
        <table class="grid-table flows" data-testid="flows">
          <thead>
            <tr>
              <th>last seen</th>
              <th>verdict</th>
              <th>source</th>
              <th>destination</th>
              <th>decided by</th>
              <th class="wide-only">node</th>
              <th class="wide-only">proto</th>
              <th>endpoint</th>
              <th class="num wide-only" title="new connections the record stands for">
                conns
              </th>
              <th class="num">pkts</th>
              <th class="num wide-only">bytes</th>
              <th>process</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((f) => (
              <tr
                key={id(f)}
                class={`${f.verdict} ${fresh.has(id(f)) ? 'fresh' : ''}`}
                data-verdict={f.verdict}
                data-src={f.src}
                data-dst={f.dst}
                data-dport={f.dport}
                data-endpoint={f.endpoint ?? ''}
              >
                <td class="mono small" title={`first ${f.firstSeen}, last ${f.lastSeen} · node ${f.node}`}>
                  {f.lastSeen.slice(11, 23)}
                </td>
                <td>
                  <span class={`verdict ${f.verdict}`}>{f.verdict}</span>
                </td>
                <td>{name(f.src, f.sport)}</td>
                <td>
                  {name(f.dst, f.dport)} <span class="muted small">{f.protocol}</span>
                </td>
                <td class="decided">
                  {f.policy ? <b>{f.policy}</b> : <span class="muted">default</span>}
                  <span class="mono small muted rule-id">{f.rule}</span>
                  {f.verdict === 'deny' && (
                    <a
                      class="why"
                      data-testid="why"
                      href={href('explain', {
                        from: podOf.get(f.src) ?? f.src,
                        to: podOf.get(f.dst) ?? f.dst,
                        port: f.protocol === 'ICMP' ? undefined : f.dport,
                        protocol: f.protocol,
                        // An IPv6 flow between pods is explained between their IPv6 addresses.
                        family: familyOf(f.src),
                        node: f.node,
                        rule: f.rule,
                      })}
                    >
                      why?
                    </a>
                  )}
                </td>
                <td class="wide-only">{f.node}</td>
                <td class="wide-only">{f.protocol}</td>
                <td>
                  {f.endpoint ?? '—'} <span class="muted">{f.direction}</span>
                </td>
                <td class="num wide-only">{f.connections}</td>
                <td class="num">{f.packets}</td>
                <td class="num wide-only">{f.bytes}</td>
                <td class="small process" data-testid="process">
                  {f.process && (
                    <>
                      {f.process.comm}[{f.process.pid}]
                      {f.process.pod && <div class="muted">in {f.process.pod}</div>}
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {shown.length < matching.length && (
        <div class="pager">
          <button type="button" data-testid="more" onClick={() => setPages((n) => n + 1)}>
            show {Math.min(page, matching.length - shown.length)} more
          </button>
          <span class="muted">{matching.length - shown.length} older flows not shown</span>
        </div>
      )}
      {shown.length === 0 && (
        <p class="muted">
          No flows yet{filter.pod || filter.verdict || filter.policy ? ' match the filter' : ''}: they appear
          here as the dataplane decides.
        </p>
      )}
    </section>
  );
}
