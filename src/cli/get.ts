/** `switchyard get KIND [NAME]`: what etcd holds, as a table, YAML or JSON. */
import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { StoredItem } from '../datastore/read.js';
import { resolveTarget, targetOptions, type TargetFlags } from './datastore-target.js';
import { CliError, formatTable, printJson } from './output.js';

interface GetFlags extends TargetFlags {
  namespace?: string;
  allNamespaces?: boolean;
  output?: string;
  json?: boolean;
}

type Obj = Record<string, Record<string, unknown> | undefined>;

function labels(o: Obj): string {
  const l = (o.metadata?.labels ?? {}) as Record<string, string>;
  return Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

function ports(o: Obj): string {
  const list = (o.spec?.ports ?? []) as { port?: number; protocol?: string }[];
  return list.map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).join(',');
}

/** Kind-specific columns, like kubectl's. */
function columns(kind: string): { headers: string[]; row: (o: Obj) => unknown[] } {
  switch (kind) {
    case 'Pod':
      return {
        headers: ['NODE', 'IP', 'LABELS'],
        row: (o) => [o.spec?.nodeName, o.status?.podIP, labels(o)],
      };
    case 'Service':
      return { headers: ['CLUSTER-IP', 'PORTS'], row: (o) => [o.spec?.clusterIP, ports(o)] };
    case 'NetworkPolicy':
      return {
        headers: ['POD-SELECTOR', 'TYPES'],
        row: (o) => [
          JSON.stringify((o.spec?.podSelector as { matchLabels?: unknown } | undefined)?.matchLabels ?? {}),
          ((o.spec?.policyTypes as string[] | undefined) ?? []).join(','),
        ],
      };
    case 'GlobalPolicy':
      return { headers: ['ORDER'], row: (o) => [o.spec?.order] };
    default:
      return { headers: ['LABELS'], row: (o) => [labels(o)] };
  }
}

export function register(program: Command): void {
  const get = program
    .command('get')
    .description('read objects back from etcd (as stored: with the node, address or cluster IP allocated)')
    .argument(
      '<kind>',
      'pods, services, networkpolicies, globalpolicies, namespaces, endpointslices, prefilters',
    )
    .argument('[name]', 'one object')
    .option('-n, --namespace <ns>', 'only this namespace (namespaced kinds)')
    .option('-A, --all-namespaces', 'every namespace (the default without -n)')
    .option('-o, --output <format>', 'table, yaml or json', 'table')
    .option('--json', 'same as -o json');
  for (const o of targetOptions()) get.addOption(o);
  get.action(async (kindName: string, name: string | undefined, flags: GetFlags) => {
    const { kindFromName, KNOWN_KIND_NAMES, NAMESPACED_KINDS } = await import('../datastore/keys.js');
    const kind = kindFromName(kindName);
    if (!kind) throw new CliError(`unknown kind '${kindName}' (known: ${KNOWN_KIND_NAMES.join(', ')})`, 2);
    const output = flags.json ? 'json' : (flags.output ?? 'table');
    if (!['table', 'yaml', 'json'].includes(output))
      throw new CliError(`-o must be table, yaml or json, not '${output}'`, 2);
    const namespaced = NAMESPACED_KINDS.has(kind);
    // One named object of a namespaced kind lives in one namespace: 'default' unless told.
    const namespace = flags.allNamespaces
      ? undefined
      : (flags.namespace ?? (name && namespaced ? 'default' : undefined));
    const target = await resolveTarget(flags);
    const { EtcdStore } = await import('../datastore/etcd.js');
    const { listObjects } = await import('../datastore/read.js');
    const store = new EtcdStore(target.url, target.tls);
    let items: StoredItem[];
    let revision: number;
    try {
      ({ items, revision } = await listObjects(store, {
        kind,
        ...(namespace !== undefined ? { namespace } : {}),
        ...(name !== undefined ? { name } : {}),
      }));
    } finally {
      store.close();
    }
    if (name !== undefined && items.length === 0) {
      const where = namespaced ? ` in namespace ${namespace ?? 'any'}` : '';
      throw new CliError(`${kind} '${name}' not found${where} (etcd revision ${revision})`);
    }
    if (output === 'json') {
      printJson({ revision, items: items.map((i) => i.object) });
    } else if (output === 'yaml') {
      process.stdout.write(items.map((i) => stringify(i.object, { version: '1.1' })).join('---\n'));
    } else {
      const cols = columns(kind);
      const rows = items.map((i) => [
        ...(namespaced ? [i.ref.namespace] : []),
        i.ref.name,
        ...cols.row(i.object as Obj),
      ]);
      process.stdout.write(
        `${formatTable([...(namespaced ? ['NAMESPACE'] : []), 'NAME', ...cols.headers], rows)}\n`,
      );
    }
  });
}
