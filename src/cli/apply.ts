/**
 * `switchyard apply` and `switchyard delete`: change the desired state in etcd, in one
 * transaction each. Against a cluster lab they also wait until every node's agent has the change
 * in force (and build what new pods need).
 */
import type { Command } from 'commander';
import type { WriteResult } from '../datastore/apply.js';
import type { ClusterConverge } from '../lab/cluster.js';
import { resolveTarget, targetOptions, type Target, type TargetFlags } from './datastore-target.js';
import { progressBar } from './lab.js';
import { addFilenameOption, manifestPaths } from './manifest-input.js';
import { CliError, printJson } from './output.js';
import type { ObjectRef } from '../datastore/keys.js';

interface ApplyFlags extends TargetFlags {
  prune?: boolean;
  json?: boolean;
  filename?: string[];
}

function summary(w: WriteResult): string {
  const lines = [
    ...w.created.map((o) => `${o} created`),
    ...w.configured.map((o) => `${o} configured`),
    ...w.deleted.map((o) => `${o} deleted`),
  ];
  const counts = [
    `${w.created.length} created`,
    `${w.configured.length} configured`,
    `${w.unchanged.length} unchanged`,
    `${w.deleted.length} deleted`,
  ];
  return `${lines.join('\n')}${lines.length ? '\n' : ''}revision ${w.revision}: ${counts.join(', ')}\n`;
}

async function write(
  what: string,
  flags: ApplyFlags,
  run: (target: Target) => Promise<WriteResult>,
  lab: (name: string) => Promise<ClusterConverge & { write: WriteResult }>,
): Promise<void> {
  const target = await resolveTarget(flags);
  // Before anything is written: a lab's write is followed by building its pods, which needs root,
  // and only root holds a lab etcd's certificate anyway.
  if (target.lab || target.tls) {
    const { requireRoot } = await import('../netns/index.js');
    requireRoot(`switchyard ${what}${target.lab ? ` --lab ${target.lab}` : ''}`);
  }
  const started = performance.now();
  let result: WriteResult;
  let enforced: { nodes: string[]; pending: string[]; ms: number } | undefined;
  if (target.lab) {
    const done = await lab(target.lab);
    result = done.write;
    enforced = {
      nodes: (done.lab.state.topology?.nodes ?? [])
        .map((n) => n.name)
        .filter((n) => !done.pending.includes(n)),
      pending: done.pending,
      ms: Math.round(performance.now() - started),
    };
  } else result = await run(target);
  if (flags.json) {
    printJson({ etcd: target.url, ...result, ...(enforced ? { lab: target.lab, enforced } : {}) });
    return;
  }
  process.stdout.write(summary(result));
  if (enforced) {
    const all = enforced.pending.length === 0 ? 'all ' : '';
    process.stdout.write(
      `in force on ${all}${enforced.nodes.length} nodes of lab ${target.lab} (${enforced.ms} ms after the write began)\n`,
    );
    if (enforced.pending.length > 0)
      process.stdout.write(
        `not yet on ${enforced.pending.join(', ')}: cut off from etcd, they catch up once healed\n`,
      );
  }
}

interface DeleteFlags extends TargetFlags {
  namespace: string;
  json?: boolean;
  filename?: string[];
}

/** `delete KIND NAME…`, or `delete -f FILE|DIR|-`: the objects the manifests name. */
async function deleteRefs(
  kindName: string | undefined,
  names: string[],
  flags: DeleteFlags,
): Promise<ObjectRef[]> {
  const { kindFromName, NAMESPACED_KINDS, KNOWN_KIND_NAMES, refOf } = await import('../datastore/keys.js');
  if (flags.filename !== undefined) {
    if (kindName !== undefined)
      throw new CliError('give KIND NAME… or -f FILE, not both', 2, { code: 'conflicting-options' });
    const { expandManifestPaths, formatIssue, readManifestDocuments } = await import('../model/index.js');
    const files = expandManifestPaths(await manifestPaths([], flags.filename));
    return files.flatMap((file) => {
      const { documents, issues } = readManifestDocuments(file);
      if (issues.length > 0)
        throw new CliError(`invalid manifests:\n${issues.map(formatIssue).join('\n')}`, 1, {
          code: 'invalid-manifests',
        });
      return documents.flatMap((d) => {
        if (d.value === null) return [];
        const ref = refOf(d.value);
        if (!ref)
          throw new CliError(
            `${file}:${d.lineOf([])}: a manifest to delete needs kind and metadata.name`,
            1,
            {
              code: 'invalid-manifests',
            },
          );
        return [ref];
      });
    });
  }
  if (kindName === undefined || names.length === 0)
    throw new CliError('give KIND NAME… or -f FILE|DIR (- for stdin)', 2, { code: 'missing-argument' });
  const kind = kindFromName(kindName);
  if (!kind) throw new CliError(`unknown kind '${kindName}' (known: ${KNOWN_KIND_NAMES.join(', ')})`, 2);
  return names.map((name) =>
    NAMESPACED_KINDS.has(kind) ? { kind, namespace: flags.namespace, name } : { kind, name },
  );
}

export function register(program: Command): void {
  const apply = program
    .command('apply')
    .description('validate manifests with what etcd holds and write them in one transaction')
    .argument('[paths...]', 'YAML files or directories; - reads standard input')
    .option('--prune', 'also delete stored objects the files do not name (the files become the whole state)')
    .option('--json', 'machine-readable result');
  for (const o of targetOptions()) apply.addOption(o);
  addFilenameOption(apply);
  apply.action(async (positional: string[], flags: ApplyFlags) => {
    const paths = await manifestPaths(positional, flags.filename);
    const { applyManifests } = await import('../datastore/apply.js');
    const { EtcdStore } = await import('../datastore/etcd.js');
    const { clusterApply } = await import('../lab/cluster.js');
    const progress = flags.json ? undefined : progressBar();
    try {
      await write(
        'apply',
        flags,
        async (target) => {
          const store = new EtcdStore(target.url, target.tls);
          try {
            return await applyManifests(store, paths, flags.prune ? { prune: true } : {});
          } finally {
            store.close();
          }
        },
        (name) =>
          clusterApply(name, paths, {
            ...(flags.prune ? { prune: true } : {}),
            ...(progress ? { progress } : {}),
          }),
      );
    } finally {
      progress?.done();
    }
  });

  const del = program
    .command('delete')
    .description('delete stored objects in one transaction (what is left must still be valid)')
    .argument('[kind]', 'pod, service, networkpolicy, globalpolicy, namespace, …')
    .argument('[names...]', 'object names')
    .option('-n, --namespace <ns>', 'namespace of namespaced kinds', 'default')
    .option('--json', 'machine-readable result');
  for (const o of targetOptions()) del.addOption(o);
  addFilenameOption(del);
  del.action(async (kindName: string | undefined, names: string[], flags: DeleteFlags) => {
    const refs = await deleteRefs(kindName, names, flags);
    const { deleteObjects } = await import('../datastore/apply.js');
    const { EtcdStore } = await import('../datastore/etcd.js');
    const { clusterConverge } = await import('../lab/cluster.js');
    const run = async (target: Target): Promise<WriteResult> => {
      const store = new EtcdStore(target.url, target.tls);
      try {
        return await deleteObjects(store, refs);
      } finally {
        store.close();
      }
    };
    await write('delete', flags, run, async (name) => {
      const w = await run(await resolveTarget({ lab: name }));
      return { write: w, ...(await clusterConverge(name)) };
    });
  });
}
