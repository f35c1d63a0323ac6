/** The lab's pod×pod matrix measured with real connections, beside what the evaluator predicts. */
import { useState } from 'preact/hooks';
import { query, type InfoResponse, type ReachResponse } from '../api.js';
import { href } from '../route.js';
import { Problem, useApi } from './common.js';

export function ReachPage({ params, info }: { params: URLSearchParams; info?: InfoResponse }) {
  const ports = info?.lab?.ports ?? [];
  const port = params.get('port') ?? String(ports[0]?.port ?? '');
  const protocol = params.get('protocol') ?? ports.find((p) => String(p.port) === port)?.protocol ?? 'TCP';
  const r = useApi<ReachResponse>(port ? `/api/reach${query({ port, protocol })}` : undefined);
  const [custom, setCustom] = useState('');
  if (info && !info.lab)
    return <Problem>The console was started without a lab: the reach matrix needs one (--lab NAME).</Problem>;
  const m = r.data;
  const sources = m ? Object.keys(m.measured.results) : [];
  const dests = m ? [...new Set(sources.flatMap((s) => Object.keys(m.measured.results[s] ?? {})))] : [];
  const mismatches = m
    ? sources.flatMap((s) => dests.filter((d) => m.measured.results[s]?.[d] !== m.predicted.results[s]?.[d]))
        .length
    : 0;
  return (
    <section>
      <h1>Reach matrix</h1>
      <p class="lede">
        New connections from every pod (rows) to every pod (columns), made for real inside the lab, compared
        with what the reference evaluator predicts.
      </p>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          if (custom) location.hash = href('reach', { port: custom, protocol });
        }}
      >
        {ports.map((p) => (
          <a
            class={`pill ${String(p.port) === port && p.protocol === protocol ? 'active' : ''}`}
            href={href('reach', { port: p.port, protocol: p.protocol })}
          >
            {p.protocol}/{p.port}
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
        <button type="submit">measure</button>
        <button type="button" onClick={r.reload}>
          again
        </button>
      </form>
      {r.error && <Problem>{r.error}</Problem>}
      {r.loading && <p class="muted">measuring…</p>}
      {m && (
        <>
          <p data-testid="reach-summary">
            {m.protocol}/{m.port} on backend <b>{m.backend}</b>: measured in {m.durationMs} ms ·{' '}
            {mismatches === 0 ? (
              <span class="agree">matches the prediction</span>
            ) : (
              <span class="disagree">{mismatches} pairs differ from the prediction</span>
            )}
          </p>
          <table class="matrix" data-testid="matrix" data-port={m.port} data-protocol={m.protocol}>
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
                    const ok = m.measured.results[s]?.[d] === true;
                    const predicted = m.predicted.results[s]?.[d] === true;
                    return (
                      <td
                        class={`cell ${ok ? 'yes' : 'no'} ${ok !== predicted ? 'mismatch' : ''}`}
                        data-from={s}
                        data-to={d}
                        data-reach={ok ? '1' : '0'}
                        title={`${s} → ${d} ${m.protocol}/${m.port}: ${ok ? 'connected' : 'no connection'}${ok !== predicted ? ` (predicted ${predicted ? 'connects' : 'blocked'})` : ''}`}
                      >
                        {s === d ? '·' : ok ? '✓' : '✕'}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
          <p class="legend">
            <span class="cell yes">✓</span> connected <span class="cell no">✕</span> blocked by policy or port
            not served <span class="cell yes mismatch">!</span> differs from the prediction
          </p>
        </>
      )}
    </section>
  );
}
