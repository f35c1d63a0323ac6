/** A problem in the input, located precisely enough to fix it without guessing. */
export interface ManifestIssue {
  file: string;
  line: number;
  /** e.g. NetworkPolicy; undefined when the document has no recognisable kind. */
  kind?: string;
  /** `namespace/name` for namespaced kinds, `name` otherwise. */
  object?: string;
  /** Dotted path with indices, e.g. spec.ingress[0].from[1].ipBlock.cidr */
  field: string;
  message: string;
}

export function formatIssue(i: ManifestIssue): string {
  const what = i.kind ? `${i.kind} ${i.object ?? '<unnamed>'}` : '<unknown kind>';
  return `${i.file}:${i.line}: ${what}: ${i.field || '(document)'}: ${i.message}`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

/** Thrown when input is invalid; nothing was computed or applied. */
export class ManifestError extends Error {
  constructor(readonly issues: ManifestIssue[]) {
    super(
      `${issues.length} problem${issues.length === 1 ? '' : 's'} in the manifests:\n` +
        issues.map(formatIssue).join('\n'),
    );
    this.name = 'ManifestError';
  }
}
