/** The node's pods with their labels and the policies that select them, then the policies. */
import type { EndpointSide, EndpointsResponse, PoliciesResponse } from '../api.js';
import { href } from '../route.js';
import { Chips, NodeErrors, Problem, useApi } from './common.js';

function Side({ side }: { side: EndpointSide }) {
  const policies = [...side.globalPolicies, ...side.networkPolicies];
  return (
    <div class="side">
      <Chips values={policies} kind="policy" />
      <span class="small">
        <span class={`default ${side.default}`} title="what the Kubernetes tier does when no rule matches">
          default {side.default}
        </span>
        <span class="muted"> · {side.rules} rules</span>
      </span>
    </div>
  );
}

export function EndpointsPage() {
  const eps = useApi<EndpointsResponse>('/api/endpoints');
  const pols = useApi<PoliciesResponse>('/api/policies');
  return (
    <section>
      <h1>Endpoints</h1>
      <p class="lede">Pods on the lab's nodes, their labels and the policies selecting each direction.</p>
      {eps.error && <Problem>{eps.error}</Problem>}
      <NodeErrors errors={eps.data?.errors} />
      <table class="grid-table" data-testid="endpoints">
        <thead>
          <tr>
            <th>pod</th>
            <th>node</th>
            <th>address</th>
            <th>labels</th>
            <th>ingress</th>
            <th>egress</th>
          </tr>
        </thead>
        <tbody>
          {eps.data?.items.map((e) => (
            <tr data-pod={e.id}>
              <td>
                <a href={href('flows', { pod: e.id })} title="flows of this pod">
                  <b>{e.id}</b>
                </a>
                <div class="muted small">
                  {e.ports.map((p) => `${p.name ? `${p.name}:` : ''}${p.port}/${p.protocol}`).join(' ')}
                </div>
              </td>
              <td>{e.node}</td>
              <td class="mono">{e.addresses.join(' ')}</td>
              <td>
                <Chips values={Object.entries(e.labels).map(([k, v]) => `${k}=${v}`)} kind="label" />
              </td>
              <td>
                <Side side={e.ingress} />
              </td>
              <td>
                <Side side={e.egress} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Policies</h2>
      {pols.error && <Problem>{pols.error}</Problem>}
      <table class="grid-table" data-testid="policies">
        <thead>
          <tr>
            <th>policy</th>
            <th>directions</th>
            <th>selects</th>
            <th>nodes</th>
            <th>rules</th>
          </tr>
        </thead>
        <tbody>
          {pols.data?.items.map((p) => (
            <tr data-policy={p.policy}>
              <td>
                <a href={href('flows', { policy: p.policy })} title="flows this policy decided">
                  <span class={`kind ${p.kind}`}>{p.kind}</span>{' '}
                  <b>
                    {p.namespace ? `${p.namespace}/` : ''}
                    {p.name}
                  </b>
                </a>
              </td>
              <td>{p.directions.join(', ')}</td>
              <td>
                <Chips values={p.selects} />
              </td>
              <td>{p.nodes.join(', ')}</td>
              <td class="mono small">{p.rules.join(' ') || '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
