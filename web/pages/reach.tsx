/**
 * The lab's pod×pod matrix: what the evaluator predicts at once, and on demand (a button, since it
 * opens a connection from every pod to every pod and each one shows up in the flow table) what
 * real connections inside the lab measure. A failed connection to a pod that does not serve the
 * port is "not served", not a policy denial.
 */
import { useEffect, useState } from 'preact/hooks';
import { get, query, type InfoResponse, type ReachOutcome, type ReachResponse } from '../api.js';
import { href } from '../route.js';
import { Problem, useApi } from './common.js';

const MARK: Record<ReachOutcome, string> = { connected: '✓', denied: '✕', 'not-served': '–' };
const WORDS: Record<ReachOutcome, string> = {
  connected: 'connected',
  denied: 'blocked by policy',
  'not-served': 'port not served',
};

const WORDED: Record<string, ReachOutcome> = {
  allowed: 'connected',
  denied: 'denied',
  unserved: 'not-served',
};

/** A cell's outcome: the matrix's own word (measured or predicted) when it gives one, else from `served`. */
function outcome(ok: boolean, served: boolean, given?: string): ReachOutcome {
  return (
    (given === undefined ? undefined : WORDED[given]) ?? (ok ? 'connected' : served ? 'denied' : 'not-served')
  );
}

export function ReachPage({ params, info }: { params: URLSearchParams; info?: InfoResponse }) {
  const ports = info?.lab?.ports ?? [];
  const port = params.get('port') ?? String(ports[0]?.port ?? '');
  const protocol = params.get('protocol') ?? ports.find((p) => String(p.port) === port)?.protocol ?? 'TCP';
  const predicted = useApi<ReachResponse>(
    port ? `/api/reach${query({ port, protocol, measure: 0 })}` : undefined,
  );
  const [measured, setMeasured] = useState<{ data?: ReachResponse; error?: string; busy: boolean }>({
    busy: false,
  });
  const [custom, setCustom] = useState('');
  // Another port is another question: forget the last measurement.
  useEffect(() => setMeasured({ busy: false }), [port, protocol]);
  if (info && !info.lab)
    return <Problem>The console was started without a lab: the reach matrix needs one (--lab NAME).</Problem>;
  const measure = (): void => {
    setMeasured({ busy: true });
    get<ReachResponse>(`/api/reach${query({ port, protocol })}`).then(
      (data) => setMeasured({ data, busy: false }),
      (e: Error) => setMeasured({ error: e.message, busy: false }),
    );
  };
  const p = predicted.data;
  const m = measured.data?.measured;
  const sources = p ? Object.keys(p.predicted.results) : [];
  const dests = p ? [...new Set(sources.flatMap((s) => Object.keys(p.predicted.results[s] ?? {})))] : [];
  const mismatches = m
    ? sources.flatMap((s) => dests.filter((d) => m.results[s]?.[d] !== p?.predicted.results[s]?.[d])).length
    : 0;
  return (
    <section>
      <h1>Reach matrix</h1>
      <p class="lede">
        New connections from every pod (rows) to every pod (columns): what the reference evaluator predicts,
        and — when you press <b>measure</b> — real connections made inside the lab. Measuring opens{' '}
        {sources.length}×{dests.length} connections, which appear in the flow table.
      </p>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          if (custom) location.hash = href('reach', { port: custom, protocol });
        }}
      >
        {ports.map((x) => (
          <a
            class={`pill ${String(x.port) === port && x.protocol === protocol ? 'active' : ''}`}
            href={href('reach', { port: x.port, protocol: x.protocol })}
          >
            {x.protocol}/{x.port}
          </a>
        ))}
        <label>
          port{' '}
          <input
            name="port"
            size={6}
            value={custom}
            onInput={(e) => setCustom((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit">go</button>
        <button type="button" data-testid="measure" onClick={measure} disabled={measured.busy || !p}>
          {m ? 'measure again' : 'measure'}
        </button>
      </form>
      {predicted.error && <Problem>{predicted.error}</Problem>}
      {measured.error && <Problem>{measured.error}</Problem>}
      {measured.busy && <p class="muted">measuring…</p>}
      {p && (
        <>
          <p data-testid="reach-summary">
            {p.protocol}/{p.port} on backend <b>{p.backend}</b>:{' '}
            {m && measured.data ? (
              <>
                measured in {measured.data.durationMs} ms ·{' '}
                {mismatches === 0 ? (
                  <span class="agree">matches the prediction</span>
                ) : (
                  <span class="disagree">{mismatches} pairs differ from the prediction</span>
                )}
              </>
            ) : (
              <span class="muted">predicted only; press measure for real connections</span>
            )}
          </p>
          <table
            class={`matrix ${m ? 'measured' : 'predicted'}`}
            data-testid="matrix"
            data-port={p.port}
            data-protocol={p.protocol}
            data-measured={m ? '1' : '0'}
          >
            <thead>
              <tr>
                <th class="corner">from \ to</th>
                {dests.map((d) => (
                  <th class="col">
                    <span>{d}</span>
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {sources.map((s) => (
                <tr>
                  <th class="row">{s}</th>
                  {dests.map((d) => {
                    const expected = p.predicted.results[s]?.[d] === true;
                    const ok = m ? m.results[s]?.[d] === true : expected;
                    const o = outcome(ok, p.served[d] !== false, (m ?? p.predicted).outcomes?.[s]?.[d]);
                    const differs = m !== undefined && ok !== expected;
                    return (
                      <td
                        class={`cell ${o} ${differs ? 'mismatch' : ''}`}
                        data-from={s}
                        data-to={d}
                        data-outcome={o}
                        {...(m ? { 'data-reach': ok ? '1' : '0' } : {})}
                        title={`${s} → ${d} ${p.protocol}/${p.port}: ${m ? '' : 'predicted '}${WORDS[o]}${differs ? ` (predicted ${expected ? 'connects' : 'blocked'})` : ''}`}
                      >
                        {s === d ? '·' : MARK[o]}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
          <p class="legend">
            <span class="cell connected">✓</span> connected <span class="cell denied">✕</span> blocked by
            policy <span class="cell not-served">–</span> port not served{' '}
            <span class="cell connected mismatch">!</span> measured differs from the prediction
          </p>
        </>
      )}
    </section>
  );
}
