/** The lab's prefilters: the deny-listed sources dropped before conntrack, and where. */
import type { PrefiltersResponse } from '../api.js';
import { href } from '../route.js';
import { Problem, useApi } from './common.js';

/** How many CIDRs a prefilter lists before "and N more". */
const LISTED = 20;

export function PrefilterPage() {
  const p = useApi<PrefiltersResponse>('/api/prefilters');
  return (
    <section>
      <h1>Prefilter</h1>
      <p class="lede">
        Sources dropped before connection tracking and policy (XDP on eBPF, the raw table on netfilter), on
        the nodes each prefilter names. A dropped packet never reaches a pod, so no policy explains it.
      </p>
      {p.error && <Problem>{p.error}</Problem>}
      {p.data && p.data.items.length === 0 && <p class="muted">The lab has no prefilters.</p>}
      {p.data && p.data.items.length > 0 && (
        <div class="table-scroll">
          <table class="grid-table prefilters" data-testid="prefilters">
            <thead>
              <tr>
                <th>prefilter</th>
                <th>nodes</th>
                <th>deny-listed sources</th>
                <th>set</th>
              </tr>
            </thead>
            <tbody>
              {p.data.items.map((x) => (
                <tr data-prefilter={x.name} data-cidrs={x.cidrs.length}>
                  <td>
                    <a
                      href={href('flows', { verdict: 'deny', policy: x.name })}
                      title="denied flows it names"
                    >
                      <b>{x.name}</b>
                    </a>
                  </td>
                  <td>{x.nodes.join(', ')}</td>
                  <td class="mono small">
                    <b>{x.cidrs.length}</b> CIDRs: {x.cidrs.slice(0, LISTED).join(' ')}
                    {x.cidrs.length > LISTED && (
                      <span class="muted"> and {x.cidrs.length - LISTED} more</span>
                    )}
                  </td>
                  <td class="mono small">{x.set}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
