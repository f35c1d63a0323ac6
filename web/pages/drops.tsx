/**
 * Kernel drops: packets to or from our pods the kernel dropped for its own reasons (no route,
 * rp_filter, no socket …), by reason and the kernel function that freed them. Policy drops are
 * on the Flows page with their deciding rule.
 */
import type { Flow, Merged } from '../api.js';
import { withPort } from '../route.js';
import { NodeErrors, Problem, useApi } from './common.js';

const portText = (f: Flow): string => (f.dport ? withPort(f.dst, f.dport) : f.dst);

export function DropsPage() {
  const drops = useApi<Merged<Flow>>('/api/flows?verdict=dropped&limit=1000');
  if (drops.error) return <Problem>{drops.error}</Problem>;
  const items = [...(drops.data?.items ?? [])].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : -1));
  return (
    <section>
      <p>
        <button onClick={drops.reload}>refresh</button>{' '}
        <span class="muted">{drops.loading ? 'loading…' : `${items.length} kernel drop records`}</span>
      </p>
      <NodeErrors errors={drops.data?.errors} />
      <table class="grid-table drops" data-testid="drops">
        <thead>
          <tr>
            <th>last seen</th>
            <th>node</th>
            <th>reason</th>
            <th>kernel function</th>
            <th>proto</th>
            <th>source</th>
            <th>destination</th>
            <th>pod</th>
            <th class="num">pkts</th>
            <th class="num">bytes</th>
          </tr>
        </thead>
        <tbody>
          {items.map((f) => (
            <tr key={`${f.node}|${f.key}`} data-reason={f.dropReason ?? ''}>
              <td class="mono small" title={`first ${f.firstSeen}, last ${f.lastSeen}`}>
                {f.lastSeen.slice(11, 23)}
              </td>
              <td>{f.node}</td>
              <td>
                <b>{f.dropReason ?? f.rule}</b>
              </td>
              <td class="mono small">{f.dropFunction ?? ''}</td>
              <td>{f.protocol}</td>
              <td>{f.src}</td>
              <td>{portText(f)}</td>
              <td>
                {f.endpoint ?? '—'} <span class="muted">{f.direction}</span>
              </td>
              <td class="num">{f.packets}</td>
              <td class="num">{f.bytes}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
