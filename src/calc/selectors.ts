import type { LabelSelector, Labels } from '../model/types.js';

/** Kubernetes label selector semantics: every matchLabels pair and every expression must hold. */
export function selectorMatches(sel: LabelSelector, labels: Labels): boolean {
  // for…in, not Object.entries: called per endpoint × selector, it allocates nothing.
  const ml = sel.matchLabels;
  for (const k in ml) if (Object.prototype.hasOwnProperty.call(ml, k) && labels[k] !== ml[k]) return false;
  for (const e of sel.matchExpressions) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const value = labels[e.key];
    switch (e.operator) {
      case 'In':
        if (!has || !e.values.includes(value as string)) return false;
        break;
      case 'NotIn':
        if (has && e.values.includes(value as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** Canonical text of a selector, e.g. `app=web,tier in (a,b),!debug`; `{}` when it selects everything. */
export function selectorText(sel: LabelSelector): string {
  const parts = [
    ...Object.entries(sel.matchLabels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`),
    ...sel.matchExpressions
      .map((e) => {
        const values = [...e.values].sort().join(',');
        switch (e.operator) {
          case 'In':
            return `${e.key} in (${values})`;
          case 'NotIn':
            return `${e.key} notin (${values})`;
          case 'Exists':
            return e.key;
          case 'DoesNotExist':
            return `!${e.key}`;
        }
      })
      .sort(),
  ];
  return parts.length === 0 ? '{}' : parts.join(',');
}
