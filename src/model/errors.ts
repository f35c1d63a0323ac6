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

/** Longest piece of an input value an error message quotes. */
export const EXCERPT_CHARS = 64;

/**
 * At most EXCERPT_CHARS of `text`, with its full length when cut: an error must say which value is
 * wrong without echoing a 50 MB scalar back at the user.
 */
export function excerpt(text: string): string {
  if (text.length <= EXCERPT_CHARS) return text;
  return `${text.slice(0, EXCERPT_CHARS)}… (${text.length} characters)`;
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
