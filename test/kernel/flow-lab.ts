/**
 * The one-node lab the netfilter flow tests share: x/a accepts TCP 80 from x/b only (x/c is
 * denied by the default), and a GlobalPolicy logs everything entering namespace x.
 */
import { globalPolicy, namespace, networkPolicy, pod, toYaml } from '../support/manifests.js';

/** The rules that decide in this lab: a's allow from b, the Log rule, a's default deny. */
export const ALLOW_RULE = 'np:x/a-from-b/ingress/0';
export const LOG_RULE = 'gp:audit-x/ingress/0';
export const DEFAULT_DENY = 'x/a/ingress/default';

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
