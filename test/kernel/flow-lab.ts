/**
 * The one-node lab the netfilter flow tests share: x/a accepts TCP 80 from x/b only (x/c is
 * denied by the default), and a GlobalPolicy logs everything entering namespace x.
 */
import { globalPolicy, namespace, networkPolicy, pod, toYaml } from '../support/manifests.js';

const PORTS = [{ name: 'http', containerPort: 80, protocol: 'TCP' as const }];

export function flowLabYaml(): string {
  return toYaml([
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { pod: 'a' }, ports: PORTS }),
    pod('x', 'b', { labels: { pod: 'b' }, ports: PORTS }),
    pod('x', 'c', { labels: { pod: 'c' }, ports: PORTS }),
    networkPolicy('x', 'a-from-b', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }],
    }),
    globalPolicy('audit-x', {
      order: 1,
      namespaceSelector: { matchLabels: { ns: 'x' } },
      ingress: [{ action: 'Log' }],
    }),
  ]);
}
