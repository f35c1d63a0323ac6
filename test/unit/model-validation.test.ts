/**
 * Manifest validation: every problem is reported (not just the first), located as
 * `file:line: Kind namespace/name: field.path: message`, and an invalid input yields no model.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatIssue,
  loadManifests,
  loadManifestTexts,
  ManifestError,
  validateManifests,
  validateManifestTexts,
  type ManifestIssue,
  type Model,
} from '../../src/model/index.js';
import { expectIssue, lineContaining, compileIR } from '../support/manifests.js';

const FILE = 'manifests/cluster.yaml';

function validate(text: string, file = FILE): { model?: unknown; issues: ManifestIssue[] } {
  return validateManifestTexts([{ file, text }]);
}

/** A NetworkPolicy in `default` whose spec is `specBody` (indented two spaces under `spec:`). */
function policyText(specBody: string, name = 'np'): string {
  return `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ${name}
  namespace: default
spec:
${specBody}`;
}

describe('kind and apiVersion', () => {
  it('rejects an unknown kind, naming the kind line and the object', () => {
    const text = `apiVersion: v1
kind: Deployment
metadata:
  name: web
  namespace: default
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expectIssue(issues, {
      file: FILE,
      line: 2,
      kind: 'Deployment',
      object: 'web',
      field: 'kind',
      message: /unknown kind v1\/Deployment/,
    });
  });

  it('rejects an unknown apiVersion of a known kind, pointing at apiVersion', () => {
    const text = `apiVersion: networking.k8s.io/v1beta1
kind: NetworkPolicy
metadata:
  name: np
  namespace: default
spec:
  podSelector: {}
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues).toHaveLength(1);
    expectIssue(issues, {
      file: FILE,
      line: 1,
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'apiVersion',
      message: /networking\.k8s\.io\/v1beta1.*networking\.k8s\.io\/v1\b/,
    });
  });

  it('rejects a document without apiVersion/kind and one that is not a mapping', () => {
    const text = `metadata:
  name: orphan
---
- just
- a list
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues).toHaveLength(2);
    expect(issues.map((i) => [i.line, i.kind])).toEqual([
      [1, undefined],
      [4, undefined],
    ]);
    expect(formatIssue(issues[0] as ManifestIssue)).toMatch(/^manifests\/cluster\.yaml:1: <unknown kind>: /);
  });
});

describe('unknown fields (a typo must never silently widen a policy)', () => {
  it('reports spec.ingres at its line', () => {
    const text = policyText(`  podSelector: {}
  ingres:
    - {}
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'ingres:'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingres',
      message: /unknown field 'ingres'/,
    });
  });

  it('reports a podSelecter typo inside a peer with the full index path', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - podSelector: { matchLabels: { app: a } }
        - podSelecter: { matchLabels: { app: b } }
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'podSelecter'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[1].podSelecter',
      message: /unknown field 'podSelecter'/,
    });
  });

  it('reports an unknown field inside ipBlock', () => {
    const text = policyText(`  podSelector: {}
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/8
            exclude: [10.1.0.0/16]
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'exclude:'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.egress[0].to[0].ipBlock.exclude',
      message: /unknown field 'exclude'/,
    });
  });

  it('reports an unknown metadata field of a Pod', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: p
  lables: { app: a }
`;
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 5,
      kind: 'Pod',
      object: 'default/p',
      field: 'metadata.lables',
      message: /unknown field 'lables'/,
    });
  });
});

describe('CIDRs', () => {
  it.each([['10.0.0.0/33'], ['300.1.1.1/8'], ['abc'], ['10.0.0.0'], ['10.0.0.0/-1']])(
    'rejects ipBlock cidr %s',
    (cidr) => {
      const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock:
            cidr: "${cidr}"
`);
      const { model, issues } = validate(text);
      expect(model).toBeUndefined();
      expectIssue(issues, {
        file: FILE,
        line: lineContaining(text, 'cidr:'),
        kind: 'NetworkPolicy',
        object: 'default/np',
        field: 'spec.ingress[0].from[0].ipBlock.cidr',
        message: new RegExp(`'${cidr.replace(/[./]/g, '\\$&')}' is not a valid CIDR`),
      });
    },
  );

  it('rejects an except entry that is not inside the cidr', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock:
            cidr: 172.17.0.0/16
            except:
              - 172.17.1.0/24
              - 172.18.0.0/24
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, '172.18.0.0/24'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[0].ipBlock.except[1]',
      message: /172\.18\.0\.0\/24.*172\.17\.0\.0\/16/,
    });
  });

  it('rejects an except entry equal to the cidr (it must be a strict subset)', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: 10.0.0.0/8, except: [10.0.0.0/8] }
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'except: [10.0.0.0/8]'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[0].ipBlock.except[0]',
      message: /strict subset/,
    });
  });

  it('rejects an invalid CIDR in an except list', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: 10.0.0.0/8, except: [10.1.0.0/40] }
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, '10.1.0.0/40'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[0].ipBlock.except[0]',
      message: /'10\.1\.0\.0\/40' is not a valid CIDR/,
    });
  });
});

describe('labels and selectors', () => {
  it('rejects an invalid label key and an invalid label value in metadata.labels', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    "team name": shop
    tier: "-front"
`;
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: 6,
      kind: 'Namespace',
      object: 'shop',
      field: 'metadata.labels.team name',
      message: /invalid label key 'team name'/,
    });
    expectIssue(issues, {
      file: FILE,
      line: 7,
      kind: 'Namespace',
      object: 'shop',
      field: 'metadata.labels.tier',
      message: /invalid label value '-front'/,
    });
  });

  it('rejects an invalid key and an over-long value in matchLabels', () => {
    const long = 'v'.repeat(64);
    const text = policyText(`  podSelector:
    matchLabels:
      "app/": a
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app: ${long}
`);
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '"app/"'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.podSelector.matchLabels.app/',
      message: /invalid label key 'app\/'/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, long),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[0].podSelector.matchLabels.app',
      message: /invalid label value/,
    });
  });

  it('rejects In without values, Exists with values and an unknown operator', () => {
    const text = policyText(`  podSelector:
    matchExpressions:
      - key: tier
        operator: In
      - key: debug
        operator: Exists
        values: [enabled]
      - key: env
        operator: Like
        values: [prod]
`);
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    const object = { file: FILE, kind: 'NetworkPolicy', object: 'default/np' };
    expectIssue(issues, {
      ...object,
      line: lineContaining(text, 'key: tier'),
      field: 'spec.podSelector.matchExpressions[0].values',
      message: /In needs values/,
    });
    expectIssue(issues, {
      ...object,
      line: lineContaining(text, 'values: [enabled]'),
      field: 'spec.podSelector.matchExpressions[1].values',
      message: /Exists takes no values/,
    });
    expectIssue(issues, {
      ...object,
      line: lineContaining(text, 'operator: Like'),
      field: 'spec.podSelector.matchExpressions[2].operator',
      message: /In.*NotIn.*Exists.*DoesNotExist/,
    });
  });

  it('rejects NotIn with an empty values list and DoesNotExist with values', () => {
    const text = policyText(`  podSelector:
    matchExpressions:
      - { key: tier, operator: NotIn, values: [] }
      - { key: debug, operator: DoesNotExist, values: [x] }
`);
    const { issues } = validate(text);
    expect(issues).toHaveLength(2);
    const at = { file: FILE, kind: 'NetworkPolicy', object: 'default/np' };
    expectIssue(issues, {
      ...at,
      line: lineContaining(text, 'NotIn'),
      field: 'spec.podSelector.matchExpressions[0].values',
      message: /NotIn needs values/,
    });
    expectIssue(issues, {
      ...at,
      line: lineContaining(text, 'DoesNotExist'),
      field: 'spec.podSelector.matchExpressions[1].values',
      message: /DoesNotExist takes no values/,
    });
  });
});

describe('ports', () => {
  const portCase = (ports: string): string =>
    policyText(`  podSelector: {}
  ingress:
    - ports:
${ports}`);

  it.each([
    ['0', 0],
    ['70000', 70000],
  ])('rejects port %s as out of range', (_label, port) => {
    const text = portCase(`        - port: ${port}\n`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, `port: ${port}`),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].port',
      message: /1-65535/,
    });
  });

  it('rejects endPort out of range', () => {
    const text = portCase(`        - port: 1000\n          endPort: 65536\n`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'endPort: 65536'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].endPort',
      message: /1-65535/,
    });
  });

  it('rejects endPort below port', () => {
    const text = portCase(`        - port: 32000
          endPort: 31000
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'endPort'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].endPort',
      message: /endPort 31000 is below port 32000/,
    });
  });

  it('accepts endPort equal to port', () => {
    const text = portCase(`        - port: 32000\n          endPort: 32000\n`);
    expect(validate(text).issues).toEqual([]);
  });

  it('rejects endPort with a named port, and endPort without a port', () => {
    const text = portCase(`        - port: http
          endPort: 90
        - endPort: 90
`);
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'endPort: 90'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].endPort',
      message: /numeric port/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'endPort: 90', 2),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[1].endPort',
      message: /numeric port/,
    });
  });

  it.each([['Http'], ['my_port'], ['a-very-long-port-name'], ['80-90'], ['a--b']])(
    'rejects invalid port name %s',
    (name) => {
      const text = portCase(`        - port: "${name}"\n`);
      expectIssue(validate(text).issues, {
        file: FILE,
        line: lineContaining(text, name),
        kind: 'NetworkPolicy',
        object: 'default/np',
        field: 'spec.ingress[0].ports[0].port',
        message: new RegExp(`port name '${name}'`),
      });
    },
  );

  it('rejects an unknown protocol', () => {
    const text = portCase(`        - protocol: ICMP\n          port: 80\n`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'ICMP'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].ports[0].protocol',
      message: /TCP.*UDP.*SCTP/,
    });
  });

  it('rejects a containerPort out of range and an invalid container port name', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: main
      ports:
        - containerPort: 0
        - name: HTTP
          containerPort: 80
`;
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: 9,
      kind: 'Pod',
      object: 'default/web',
      field: 'spec.containers[0].ports[0].containerPort',
      message: /1-65535/,
    });
    expectIssue(issues, {
      file: FILE,
      line: 10,
      kind: 'Pod',
      object: 'default/web',
      field: 'spec.containers[0].ports[1].name',
      message: /port name 'HTTP'/,
    });
  });
});

describe('peers', () => {
  it('rejects a peer with ipBlock and podSelector', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - podSelector: {}
          ipBlock: { cidr: 10.0.0.0/8 }
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'ipBlock'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[0].ipBlock',
      message: /cannot be combined/,
    });
  });

  it('rejects a peer with ipBlock and namespaceSelector', () => {
    const text = policyText(`  podSelector: {}
  egress:
    - to:
        - ipBlock: { cidr: 10.0.0.0/8 }
          namespaceSelector: {}
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'ipBlock'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.egress[0].to[0].ipBlock',
      message: /cannot be combined/,
    });
  });

  it('rejects an empty peer', () => {
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - podSelector: { matchLabels: { app: a } }
        - {}
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, '- {}'),
      kind: 'NetworkPolicy',
      object: 'default/np',
      field: 'spec.ingress[0].from[1]',
      message: /a peer needs podSelector, namespaceSelector or ipBlock/,
    });
  });
});

describe('names, namespaces and addresses across objects', () => {
  it('reports a duplicate NetworkPolicy at the second one, naming where the first is', () => {
    const first = policyText('  podSelector: {}\n', 'dup');
    const text = `${first}---\n${first}`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'name: dup', 2),
      kind: 'NetworkPolicy',
      object: 'default/dup',
      field: 'metadata.name',
      message: new RegExp(`duplicate NetworkPolicy 'default/dup' \\(first defined at ${FILE}:4\\)`),
    });
  });

  it('allows the same policy name in two namespaces', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata: { name: other }
---
${policyText('  podSelector: {}\n', 'same')}---
${policyText('  podSelector: {}\n', 'same').replace('namespace: default', 'namespace: other')}`;
    expect(validate(text).issues).toEqual([]);
  });

  it('reports duplicate Pods across two files, naming the other file', () => {
    const pod = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
`;
    const { model, issues } = validateManifestTexts([
      { file: 'a.yaml', text: pod },
      { file: 'b.yaml', text: pod },
    ]);
    expect(model).toBeUndefined();
    expectIssue(issues, {
      file: 'b.yaml',
      line: 4,
      kind: 'Pod',
      object: 'default/web',
      field: 'metadata.name',
      message: /duplicate Pod 'default\/web' \(first defined at a\.yaml:4\)/,
    });
  });

  it('reports duplicate Namespaces (including an explicit second `default`)', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: default
---
apiVersion: v1
kind: Namespace
metadata:
  name: default
`;
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 9,
      kind: 'Namespace',
      object: 'default',
      field: 'metadata.name',
      message: /duplicate Namespace 'default'/,
    });
  });

  it('reports a pod and a policy in a namespace that is not defined; `default` exists implicitly', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: ghost
---
apiVersion: v1
kind: Pod
metadata:
  name: q
---
${policyText('  podSelector: {}\n', 'np').replace('namespace: default', 'namespace: phantom')}`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues).toHaveLength(2);
    expectIssue(issues, {
      file: FILE,
      line: 5,
      kind: 'Pod',
      object: 'ghost/p',
      field: 'metadata.namespace',
      message: /namespace 'ghost' is not defined/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'namespace: phantom'),
      kind: 'NetworkPolicy',
      object: 'phantom/np',
      field: 'metadata.namespace',
      message: /namespace 'phantom' is not defined/,
    });
  });

  it('rejects an invalid podIP', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: p
status:
  podIP: 198.18.300.1
`;
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 6,
      kind: 'Pod',
      object: 'default/p',
      field: 'status.podIP',
      message: /'198\.18\.300\.1' is not a valid IP address/,
    });
  });

  it('rejects two pods with the same podIP, at the second pod', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: first
status:
  podIP: 198.18.0.10
---
apiVersion: v1
kind: Pod
metadata:
  name: second
status:
  podIP: 198.18.0.10
`;
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 13,
      kind: 'Pod',
      object: 'default/second',
      field: 'status.podIP',
      message: /198\.18\.0\.10 is already used by pod default\/first/,
    });
  });
});

describe('YAML and document structure', () => {
  it.each([
    ['a mis-indented key', ' labels: { team: shop }', /same column/],
    ['a tab used for indentation', '\tlabels: {}', /[Tt]ab/],
  ])('reports a YAML syntax error (%s) at its line, and nothing else of that file', (_what, bad, message) => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: a
${bad}
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues).toHaveLength(1);
    const issue = issues[0] as ManifestIssue;
    expect(issue).toMatchObject({ file: FILE, line: 5, field: '' });
    expect(issue.kind).toBeUndefined();
    expect(issue.message).toMatch(/^YAML: /);
    expect(issue.message).toMatch(message);
    expect(formatIssue(issue)).toMatch(/^manifests\/cluster\.yaml:5: <unknown kind>: \(document\): YAML: /);
  });

  it('still validates the other documents of a file when one has a YAML error', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: a
 labels: {}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: ghost
`;
    const { issues } = validate(text);
    expect(issues.map((i) => [i.line, i.field])).toEqual([
      [5, ''],
      [11, 'metadata.namespace'],
    ]);
  });

  it('reports a duplicate key at the line of the second key', () => {
    const text = `apiVersion: v1
kind: Namespace
metadata:
  name: a
  name: b
`;
    const { issues } = validate(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.line).toBe(5);
    expect(issues[0]?.message).toMatch(/^YAML: .*unique/i);
  });

  it('locates errors in later documents of a multi-document file by their own lines', () => {
    const text = `# header comment
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: { "bad key!": x }
---

---
${policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: 10.0.0.0/33 }
`)}`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues.map((i) => [i.line, i.kind, i.object, i.field])).toEqual([
      [12, 'Pod', 'shop/web', 'metadata.labels.bad key!'],
      [
        lineContaining(text, '10.0.0.0/33'),
        'NetworkPolicy',
        'default/np',
        'spec.ingress[0].from[0].ipBlock.cidr',
      ],
    ]);
  });

  it('reports several errors of one file, all of them, in line order', () => {
    const text = `apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: nowhere
---
${policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: abc }
      ports:
        - port: 0
  egres: []
`)}---
apiVersion: v1
kind: Gizmo
metadata: { name: g }
---
apiVersion: v1
kind: Pod
metadata:
  name: a
status: { podIP: nope }
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    expect(issues.map((i) => [i.line, i.field])).toEqual([
      [5, 'metadata.namespace'],
      [lineContaining(text, 'cidr: abc'), 'spec.ingress[0].from[0].ipBlock.cidr'],
      [lineContaining(text, 'port: 0'), 'spec.ingress[0].ports[0].port'],
      [lineContaining(text, 'egres:'), 'spec.egres'],
      [lineContaining(text, 'kind: Gizmo'), 'kind'],
      [lineContaining(text, 'podIP: nope'), 'status.podIP'],
    ]);
    const lines = issues.map((i) => i.line);
    expect([...lines].sort((a, b) => a - b)).toEqual(lines);
  });

  it('orders issues by input file, then line', () => {
    const bad = `apiVersion: v1
kind: Pod
metadata:
  name: "Bad"
`;
    const { issues } = validateManifestTexts([
      { file: 'z.yaml', text: bad },
      { file: 'a.yaml', text: `\n\n${bad}` },
    ]);
    expect(issues.map((i) => `${i.file}:${i.line}`)).toEqual(['z.yaml:4', 'a.yaml:6']);
  });

  it('ignores empty documents and accepts a valid multi-document file', () => {
    const text = `---
apiVersion: v1
kind: Namespace
metadata: { name: a }
---
---
apiVersion: v1
kind: Pod
metadata: { name: p, namespace: a }
...
`;
    const { model, issues } = validateManifestTexts([{ file: FILE, text }]);
    expect(issues).toEqual([]);
    expect(model?.pods.map((p) => `${p.namespace}/${p.name}`)).toEqual(['a/p']);
    expect(model?.namespaces.map((n) => n.name).sort()).toEqual(['a', 'default']);
  });
});

describe('invalid input computes nothing', () => {
  const valid = `apiVersion: v1
kind: Pod
metadata: { name: good }
`;
  const invalid = `apiVersion: v1
kind: Pod
metadata: { name: bad, namespace: missing }
`;

  it('returns no model when any document is invalid, even if others are valid', () => {
    const result = validateManifestTexts([
      { file: 'good.yaml', text: valid },
      { file: 'bad.yaml', text: invalid },
    ]);
    expect(result.model).toBeUndefined();
    expect(result.issues.map((i) => i.file)).toEqual(['bad.yaml']);
  });

  it('loadManifestTexts throws a ManifestError listing every formatted issue', () => {
    let thrown: unknown;
    try {
      loadManifestTexts([{ file: 'bad.yaml', text: invalid }]);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ManifestError);
    const err = thrown as ManifestError;
    expect(err.issues).toHaveLength(1);
    expect(err.message).toContain(
      "bad.yaml:3: Pod missing/bad: metadata.namespace: namespace 'missing' is not defined",
    );
  });

  it('returns a model and no issues for valid input', () => {
    const result = validateManifestTexts([{ file: 'good.yaml', text: valid }]);
    expect(result.issues).toEqual([]);
    expect(result.model?.pods).toHaveLength(1);
  });
});

describe('GlobalPolicy and Prefilter kinds', () => {
  const globalText = (spec: string, name = 'guard'): string => `apiVersion: switchyard.dev/v1alpha1
kind: GlobalPolicy
metadata:
  name: ${name}
spec:
${spec}`;

  it('requires order', () => {
    const text = globalText(`  ingress:
    - action: Deny
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 5,
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.order',
      message: /required field is missing/,
    });
  });

  it('rejects an unknown action', () => {
    const text = globalText(`  order: 10
  ingress:
    - action: Drop
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'Drop'),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.ingress[0].action',
      message: /"Allow", "Deny", "Pass", "Log"/,
    });
  });

  it('rejects ports together with protocol ICMP', () => {
    const text = globalText(`  order: 10
  egress:
    - action: Allow
      protocol: ICMP
      ports: [{ port: 80 }]
`);
    expectIssue(validate(text).issues, {
      file: FILE,
      line: lineContaining(text, 'ports:'),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.egress[0].ports',
      message: /ICMP/,
    });
  });

  it('rejects an ingress rule with `to` and an egress rule with `from`', () => {
    const text = globalText(`  order: 10
  ingress:
    - action: Allow
    - action: Deny
      to: [{ nets: [10.0.0.0/8] }]
  egress:
    - action: Deny
      from: [{ nets: [10.0.0.0/8] }]
`);
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'to: ['),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.ingress[1].to',
      message: /ingress rules take from, not to/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'from: ['),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.egress[0].from',
      message: /egress rules take to, not from/,
    });
  });

  it('rejects an invalid CIDR in nets and an empty global peer', () => {
    const text = globalText(`  order: 1
  ingress:
    - action: Deny
      from:
        - nets: [10.0.0.0/8, 10.0.0.0/99]
        - {}
`);
    const { issues } = validate(text);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'nets:'),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.ingress[0].from[0].nets[1]',
      message: /'10\.0\.0\.0\/99' is not a valid CIDR/,
    });
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '- {}'),
      kind: 'GlobalPolicy',
      object: 'guard',
      field: 'spec.ingress[0].from[1]',
      message: /a peer needs/,
    });
  });

  it('rejects a Prefilter with neither cidrs nor file', () => {
    const text = `apiVersion: switchyard.dev/v1alpha1
kind: Prefilter
metadata:
  name: blocklist
spec:
  nodes: [node-1]
`;
    expectIssue(validate(text).issues, {
      file: FILE,
      line: 5,
      kind: 'Prefilter',
      object: 'blocklist',
      field: 'spec',
      message: /needs cidrs, file, or both/,
    });
  });

  it('names the field of a bad IPv6 CIDR in a Prefilter, beside good ones of both families', () => {
    const text = `apiVersion: switchyard.dev/v1alpha1
kind: Prefilter
metadata:
  name: blocklist
spec:
  cidrs:
    - 198.18.200.0/24
    - fd00:5957:1::/48
    - fd00:5957::/129
    - fd00:5957:::1/64
`;
    const { model, issues } = validate(text);
    expect(model).toBeUndefined();
    for (const [i, bad] of [
      [2, 'fd00:5957::/129'],
      [3, 'fd00:5957:::1/64'],
    ] as const)
      expectIssue(issues, {
        file: FILE,
        line: lineContaining(text, `- ${bad}`),
        kind: 'Prefilter',
        object: 'blocklist',
        field: `spec.cidrs[${i}]`,
        message: new RegExp(`'${bad.replace(/[.]/g, '\\.')}' is not a valid CIDR`),
      });
    expect(issues).toHaveLength(2);
  });

  describe('Prefilter files', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'sy-prefilter-'));
      writeFileSync(join(dir, 'good.txt'), '# known bad\n198.18.210.0/24\n\n198.18.202.17   # one host\n');
      writeFileSync(join(dir, 'bad.txt'), '# header\n198.18.201.0/24\n\nnot-an-address\n198.18.0.0/40\n');
      writeFileSync(
        join(dir, 'mixed.txt'),
        'fd00:5957:2::7\nfd00:5957:1:0:ffff::/64 # host bits set\n198.18.210.0/24\n',
      );
      writeFileSync(join(dir, 'bad6.txt'), 'fd00:5957::1\nfd00:5957::/200\nfd00::5957::1\n');
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const prefilterText = (file: string): string => `apiVersion: switchyard.dev/v1alpha1
kind: Prefilter
metadata:
  name: blocklist
spec:
  cidrs: [198.18.200.0/24]
  file: ${file}
`;

    it('reads CIDRs and addresses from the file, skipping comments and blank lines', () => {
      const manifest = join(dir, 'prefilter.yaml');
      const { model, issues } = validateManifestTexts([{ file: manifest, text: prefilterText('good.txt') }]);
      expect(issues).toEqual([]);
      expect(model?.prefilters).toHaveLength(1);
      // Compiled, the list is the normalised union of the inline and the file entries.
      const ir = compileIR(model as Model);
      const setId = ir.prefilters[0]?.set;
      expect(ir.ipSets.find((s) => s.id === setId)?.cidrs).toEqual([
        '198.18.200.0/24',
        '198.18.202.17/32',
        '198.18.210.0/24',
      ]);
    });

    it('reads IPv6 entries beside IPv4 ones: an address is a /128, host bits are cleared', () => {
      const manifest = join(dir, 'prefilter.yaml');
      const { model, issues } = validateManifestTexts([{ file: manifest, text: prefilterText('mixed.txt') }]);
      expect(issues).toEqual([]);
      const ir = compileIR(model as Model);
      const setId = ir.prefilters[0]?.set;
      expect(ir.ipSets.find((s) => s.id === setId)?.cidrs).toEqual([
        '198.18.200.0/24',
        '198.18.210.0/24',
        'fd00:5957:1::/64',
        'fd00:5957:2::7/128',
      ]);
    });

    it('names the list file and its line for a bad IPv6 entry', () => {
      const manifest = join(dir, 'prefilter.yaml');
      const { model, issues } = validateManifestTexts([{ file: manifest, text: prefilterText('bad6.txt') }]);
      expect(model).toBeUndefined();
      for (const [line, bad] of [
        [2, 'fd00:5957::/200'],
        [3, 'fd00::5957::1'],
      ] as const)
        expectIssue(issues, {
          file: join(dir, 'bad6.txt'),
          line,
          kind: 'Prefilter',
          object: 'blocklist',
          field: 'spec.file',
          message: new RegExp(`'${bad}' is not a valid CIDR or address`),
        });
      expect(issues).toHaveLength(2);
    });

    it('names the list file and its line for a bad entry', () => {
      const manifest = join(dir, 'prefilter.yaml');
      const { model, issues } = validateManifestTexts([{ file: manifest, text: prefilterText('bad.txt') }]);
      expect(model).toBeUndefined();
      const listFile = join(dir, 'bad.txt');
      expectIssue(issues, {
        file: listFile,
        line: 4,
        kind: 'Prefilter',
        object: 'blocklist',
        field: 'spec.file',
        message: /'not-an-address' is not a valid CIDR or address/,
      });
      expectIssue(issues, {
        file: listFile,
        line: 5,
        kind: 'Prefilter',
        object: 'blocklist',
        field: 'spec.file',
        message: /'198\.18\.0\.0\/40' is not a valid CIDR or address/,
      });
    });

    it('reports a missing list file at spec.file of the manifest', () => {
      const manifest = join(dir, 'prefilter.yaml');
      const text = prefilterText('missing.txt');
      const { model, issues } = validateManifestTexts([{ file: manifest, text }]);
      expect(model).toBeUndefined();
      expectIssue(issues, {
        file: manifest,
        line: lineContaining(text, 'file:'),
        kind: 'Prefilter',
        object: 'blocklist',
        field: 'spec.file',
        message: new RegExp(`cannot read ${resolve(dir, 'missing.txt').replace(/[.]/g, '\\.')}`),
      });
    });
  });
});

describe('loading files and directories', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sy-manifests-'));
    mkdirSync(join(dir, 'apps', 'deep'), { recursive: true });
    writeFileSync(join(dir, '00-ns.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop }\n');
    writeFileSync(
      join(dir, 'apps', 'web.yml'),
      'apiVersion: v1\nkind: Pod\nmetadata: { name: web, namespace: shop }\n',
    );
    writeFileSync(
      join(dir, 'apps', 'deep', 'policy.yaml'),
      policyText('  podSelector: {}\n  policyTypes: [Ingress]\n').replace(
        'namespace: default',
        'namespace: shop',
      ),
    );
    writeFileSync(join(dir, 'README.md'), 'not: [a manifest\n');
    writeFileSync(join(dir, 'apps', 'notes.txt'), '{{{ garbage');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads a directory recursively, YAML files only, in sorted order', () => {
    const { model, issues, files } = validateManifests([dir]);
    expect(issues).toEqual([]);
    expect(files).toEqual([
      join(dir, '00-ns.yaml'),
      join(dir, 'apps', 'deep', 'policy.yaml'),
      join(dir, 'apps', 'web.yml'),
    ]);
    expect(model?.pods.map((p) => `${p.namespace}/${p.name}`)).toEqual(['shop/web']);
    expect(model?.networkPolicies.map((p) => `${p.namespace}/${p.name}`)).toEqual(['shop/np']);
    expect(
      loadManifests([dir])
        .namespaces.map((n) => n.name)
        .sort(),
    ).toEqual(['default', 'shop']);
  });

  it('names the nested file in an issue found while loading a directory', () => {
    const bad = join(dir, 'apps', 'deep', 'broken.yaml');
    writeFileSync(
      bad,
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  namespace: shop\nstatus:\n  podIP: 1.2.3\n',
    );
    try {
      const { model, issues } = validateManifests([dir]);
      expect(model).toBeUndefined();
      expectIssue(issues, {
        file: bad,
        line: 7,
        kind: 'Pod',
        object: 'shop/x',
        field: 'status.podIP',
        message: /not a valid IP address/,
      });
    } finally {
      rmSync(bad);
    }
  });

  it('throws naming a path that does not exist', () => {
    expect(() => validateManifests([join(dir, 'nope')])).toThrow(/nope: no such file or directory/);
  });
});

const distBuilt = existsSync(resolve('dist/cli/main.js'));

describe.skipIf(!distBuilt)('switchyard validate (built CLI)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sy-cli-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('exits 1 and prints file:line: Kind ns/name: field: message on stderr', () => {
    const file = join(dir, 'bad.yaml');
    const text = policyText(`  podSelector: {}
  ingress:
    - from:
        - ipBlock: { cidr: 10.0.0.0/33 }
`);
    writeFileSync(file, text);
    const run = spawnSync(process.execPath, [resolve('bin/switchyard'), 'validate', file], {
      encoding: 'utf8',
    });
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    const line = lineContaining(text, '10.0.0.0/33');
    expect(run.stderr).toContain(
      `${file}:${line}: NetworkPolicy default/np: spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.0/33' is not a valid CIDR`,
    );
    expect(run.stderr).toMatch(/1 problem\(s\) found/);
  });

  it('exits 0 for a valid file', () => {
    const file = join(dir, 'good.yaml');
    writeFileSync(file, policyText('  podSelector: {}\n'));
    const run = spawnSync(process.execPath, [resolve('bin/switchyard'), 'validate', file], {
      encoding: 'utf8',
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^ok: 1 file\(s\)/);
  });
});
