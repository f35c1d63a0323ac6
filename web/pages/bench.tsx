/** The latest bench results as charts, the advisor's recommendation beside them. */
import type { BenchResponse } from '../api.js';
import { Problem, useApi } from './common.js';

export function BenchPage() {
  const b = useApi<BenchResponse>('/api/bench');
  if (b.error) return <Problem>{b.error}</Problem>;
  if (!b.data) return <p class="muted">loading…</p>;
  const { advice, colors } = b.data;
  const chip = (backend: string) => (
    <span class="chip backend" style={{ background: colors[backend] ?? '#5b6473' }}>
      {backend}
    </span>
  );
  const isBackend = (c: string): boolean => c in colors;
  return (
    <section class="bench">
      <div class="charts">
        <h1>Benchmarks</h1>
        <p class="lede">
          {b.data.file} · kernel {b.data.machine.kernel}, {b.data.machine.cpus} CPUs, node{' '}
          {b.data.machine.node}
        </p>
        {b.data.scenarios.map((s) => (
          <figure data-scenario={s.name}>
            <img
              src={`/api/bench/chart?scenario=${encodeURIComponent(s.name)}`}
              alt={`${s.name}: ${s.unit} (${s.better} is better) for ${s.backends.join(', ')}`}
            />
            {s.notes.length > 0 && (
              <figcaption>
                <details>
                  <summary>how it was measured ({s.notes.length} notes)</summary>
                  {s.notes.map((n) => (
                    <div>{n}</div>
                  ))}
                </details>
              </figcaption>
            )}
          </figure>
        ))}
        {b.data.missing.map((name) => (
          <figure data-scenario={name} data-missing="1" class="missing">
            <div class="muted">
              <b>{name}</b>: not in {b.data?.file}. Measure it with{' '}
              <span class="mono">sudo ./bin/switchyard bench {name} --json FILE</span> and start the console
              with <span class="mono">--bench FILE</span>.
            </div>
          </figure>
        ))}
      </div>
      <aside class="advice" data-testid="advice">
        <h2>Advisor</h2>
        <div class="banner allow">
          <div class="big" data-testid="advised-backend" style={{ color: colors[advice.backend] }}>
            {advice.backend}
          </div>
          <div>{advice.summary}</div>
        </div>
        <p class="muted small">
          workload from {b.data.workloadFrom} ·{' '}
          {advice.measured ? 'weighed with these measurements' : 'rules of thumb only'} · votes{' '}
          {Object.entries(advice.scores)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ')}
        </p>
        <p class="muted small" data-testid="tie-rule">
          Ties: {advice.tieRule}. A tied concern votes for each tied backend.
        </p>
        <table class="grid-table">
          <thead>
            <tr>
              <th>concern</th>
              <th>use</th>
              <th>advice</th>
            </tr>
          </thead>
          <tbody>
            {advice.recommendations.map((r) => (
              <tr data-concern={r.concern}>
                <td>
                  <b>{r.concern}</b>
                  <div class="muted small">{r.measured ? 'measured' : 'rule of thumb'}</div>
                </td>
                <td data-testid="choice">
                  {[r.choice, ...r.tiedWith].map((c, i) => (
                    <>
                      {i > 0 && <span title="a tie: the measurements cannot tell them apart"> = </span>}
                      {isBackend(c) ? chip(c) : <span class="chip">{c}</span>}
                    </>
                  ))}
                  {r.tiedWith.length > 0 && <div class="muted small">tie</div>}
                </td>
                <td class="small">
                  {r.advice}
                  {r.reasons.map((why) => (
                    <div class="muted">{why}</div>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </aside>
    </section>
  );
}
