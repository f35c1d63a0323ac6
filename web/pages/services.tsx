/** The lab's services: each ClusterIP and port, the pods behind it, and links to their flows. */
import type { ServicesResponse } from '../api.js';
import { href, withPort } from '../route.js';
import { Problem, useApi } from './common.js';

export function ServicesPage() {
  const s = useApi<ServicesResponse>('/api/services');
  return (
    <section>
      <h1>Services</h1>
      <p class="lede">
        ClusterIP services as every node balances them: a connection to the address and port goes to one of
        the pods behind it, and policy then decides on that pod. Probe one with{' '}
        <span class="mono">switchyard lab probe --to svc/NAMESPACE/NAME:PORT</span>.
      </p>
      {s.error && <Problem>{s.error}</Problem>}
      {s.data && s.data.items.length === 0 && <p class="muted">The lab has no services.</p>}
      {s.data && s.data.items.length > 0 && (
        <div class="table-scroll">
          <table class="grid-table services" data-testid="services">
            <thead>
              <tr>
                <th>service</th>
                <th>address</th>
                <th>backends (pod → address:port, node)</th>
                <th>affinity</th>
              </tr>
            </thead>
            <tbody>
              {s.data.items.map((v) => (
                <tr data-service={v.service} data-port={v.port}>
                  <td>
                    <b>{v.service}</b>
                    {v.portName && <span class="muted"> ({v.portName})</span>}
                  </td>
                  <td class="mono">
                    {withPort(v.address, v.port)}/{v.protocol}
                  </td>
                  <td>
                    {v.backends.length === 0 && (
                      <span class="muted">no ready pods: connections are refused</span>
                    )}
                    {v.backends.map((b) => (
                      <div data-backend={b.endpoint}>
                        <a href={href('flows', { pod: b.endpoint })} title="flows of this pod">
                          {b.endpoint}
                        </a>{' '}
                        <span class="mono small">→ {withPort(b.address, b.port)}</span>
                        {b.node && <span class="muted small"> on {b.node}</span>}
                      </div>
                    ))}
                  </td>
                  <td>{v.affinity}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
