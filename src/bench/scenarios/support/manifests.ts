/** The manifests benches write for their labs, and the model they make. */
import { validateManifestTexts, type Model } from '../../../model/index.js';

/** Validates the bench's documents into a model; `what` names the bench in the error. */
export function benchModel(what: string, file: string, docs: readonly string[]): Model {
  const { model, issues } = validateManifestTexts([{ file, text: docs.join('---\n') }]);
  if (!model) throw new Error(`${what} model is invalid: ${issues.map((i) => i.message).join('; ')}`);
  return model;
}

export function namespaceYaml(name: string): string {
  return `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${name}, labels: { ns: ${name} } }\n`;
}

/** A pod labelled app=<name> with one container listening on TCP `ports`, on `node` if given. */
export function podYaml(p: { ns: string; name: string; ports: readonly number[]; node?: string }): string {
  const ports = p.ports.map((port) => `{ containerPort: ${port}, protocol: TCP }`).join(', ');
  const node = p.node ? `nodeName: ${p.node}, ` : '';
  return (
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${p.name}, namespace: ${p.ns}, labels: { app: ${p.name} } }\n` +
    `spec: { ${node}containers: [{ name: c, ports: [${ports}] }] }\n`
  );
}

/**
 * A NetworkPolicy on the pods labelled app=`pods` allowing exactly the pods labelled app=`peer`
 * on TCP `ports`, in one direction.
 */
export function allowYaml(p: {
  ns: string;
  name: string;
  pods: string;
  direction: 'ingress' | 'egress';
  peer: string;
  ports: readonly number[];
}): string {
  const ports = p.ports.map((port) => `{ port: ${port}, protocol: TCP }`).join(', ');
  const [type, side] = p.direction === 'ingress' ? ['Ingress', 'from'] : ['Egress', 'to'];
  return (
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: ${p.name}, namespace: ${p.ns} }\n` +
    `spec:\n  podSelector: { matchLabels: { app: ${p.pods} } }\n  policyTypes: [${type}]\n` +
    `  ${p.direction}:\n    - ${side}: [{ podSelector: { matchLabels: { app: ${p.peer} } } }]\n` +
    `      ports: [${ports}]\n`
  );
}
