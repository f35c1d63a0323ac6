/** The latest bench results as charts, the advisor's recommendation beside them. */
import type { BenchResponse } from '../api.js';
import { Problem, useApi } from './common.js';

export function BenchPage() {
  const b = useApi<BenchResponse>('/api/bench');
  if (b.error) return <Problem>{b.error}</Problem>;
  if (!b.data) return <p class="muted">loading…</p>;
  const { advice } = b.data;
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
              width={720}
              height={360}
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
      </div>
      <aside class="advice" data-testid="advice">
        <h2>Advisor</h2>
        <div class="banner allow">
          <div class="big" data-testid="advised-backend">
            {advice.backend}
          </div>
          <div>{advice.summary}</div>
        </div>
        <p class="muted small">
          workload from {b.data.workloadFrom} ·{' '}
          {advice.measured ? 'weighed with these measurements' : 'rules of thumb only'}
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
              <tr>
                <td>
                  <b>{r.concern}</b>
                  <div class="muted small">{r.measured ? 'measured' : 'rule of thumb'}</div>
                </td>
                <td>
                  <span class="chip">{r.choice}</span>
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
