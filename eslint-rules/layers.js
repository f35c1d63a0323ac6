/**
 * ESLint rule `switchyard/layers`: every import in src/ and web/ must respect the layer table
 * (eslint-rules/layers-table.js, explained in docs/architecture.md). It reads static imports, re-exports,
 * import() with a literal specifier and `typeof import('…')` types.
 *
 * Option `knownViolations`: exact { file, import } pairs (the specifier as written) the rule lets pass while
 * they are being fixed. The list can only shrink: an entry that no longer matches a violation is an error in
 * its file, and an entry whose file is gone is an error in `listedIn` (the config file holding the list).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkImport, labelOf } from './layers-table.js';

/** The repository root: this file lives in <root>/eslint-rules/. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** @param {string} abs */
function repoPath(abs) {
  return path.relative(ROOT, abs).split(path.sep).join('/');
}

/**
 * The imported file, repository-relative with its source extension; null for packages and node: builtins.
 * @param {string} fromAbs
 * @param {string} spec
 */
function resolveSpecifier(fromAbs, spec) {
  if (!spec.startsWith('./') && !spec.startsWith('../')) return null;
  return repoPath(path.resolve(path.dirname(fromAbs), spec)).replace(/\.js$/, '.ts');
}

/**
 * The string an import() or import type names, when it is a literal.
 * @param {any} node
 * @returns {string | null}
 */
function literalSpecifier(node) {
  if (!node) return null;
  if (node.type === 'Literal' && typeof node.value === 'string') return node.value;
  if (node.type === 'TemplateLiteral' && node.expressions.length === 0) return node.quasis[0].value.cooked;
  if (node.type === 'TSLiteralType') return literalSpecifier(node.literal);
  return null;
}

/**
 * True for `import type …` / `export type … from`, and for lists whose every name is `type X`: no code loads.
 * @param {any} node
 * @param {'importKind' | 'exportKind'} kind
 */
function typeOnly(node, kind) {
  if (node[kind] === 'type') return true;
  const names = node.specifiers ?? [];
  return names.length > 0 && names.every((/** @type {any} */ s) => s[kind] === 'type');
}

/** @type {import('eslint').Rule.RuleModule} */
export const layersRule = {
  meta: {
    type: 'problem',
    docs: {
      description: 'Imports follow the layers of docs/architecture.md (table: eslint-rules/layers-table.js)',
    },
    schema: [
      {
        type: 'object',
        properties: {
          knownViolations: {
            type: 'array',
            items: {
              type: 'object',
              properties: { file: { type: 'string' }, import: { type: 'string' } },
              required: ['file', 'import'],
              additionalProperties: false,
            },
          },
          listedIn: { type: 'string' },
        },
        additionalProperties: false,
      },
    ],
    messages: {
      layer: '{{from}} may not import {{to}}: {{reason}}',
      stale:
        'stale KNOWN_VIOLATIONS entry {{file}} → {{spec}}: that import is gone or allowed now; delete the entry from {{listedIn}}',
      gone: 'stale KNOWN_VIOLATIONS entry {{file}} → {{spec}}: {{file}} no longer exists; delete the entry',
    },
  },
  create(context) {
    const options = context.options[0] ?? {};
    /** @type {Array<{ file: string, import: string }>} */
    const known = options.knownViolations ?? [];
    const listedIn = options.listedIn ?? 'eslint.config.js';
    const file = repoPath(context.filename);
    const mine = known.filter((k) => k.file === file);
    const excused = new Set();

    /**
     * @param {any} node the specifier node, where a report points
     * @param {{ typeOnly: boolean, dynamic: boolean }} how
     */
    const check = (node, how) => {
      const spec = literalSpecifier(node);
      const to = spec === null ? null : resolveSpecifier(context.filename, spec);
      const reason = to === null ? null : checkImport(file, to, how);
      if (reason === null || to === null) return;
      const entry = mine.find((k) => k.import === spec);
      if (entry) {
        excused.add(entry);
        return;
      }
      const data = { from: labelOf(file), to: labelOf(to), reason };
      context.report({ node, messageId: 'layer', data });
    };

    /** @param {any} program */
    const reportStale = (program) => {
      for (const entry of mine) {
        if (excused.has(entry)) continue;
        const data = { file: entry.file, spec: entry.import, listedIn };
        context.report({ node: program, loc: { line: 1, column: 0 }, messageId: 'stale', data });
      }
      if (file !== listedIn) return;
      for (const entry of known) {
        if (existsSync(path.join(ROOT, entry.file))) continue;
        context.report({ node: program, messageId: 'gone', data: { file: entry.file, spec: entry.import } });
      }
    };

    return {
      ImportDeclaration: (node) =>
        check(node.source, { typeOnly: typeOnly(node, 'importKind'), dynamic: false }),
      ExportNamedDeclaration: (node) => {
        if (node.source) check(node.source, { typeOnly: typeOnly(node, 'exportKind'), dynamic: false });
      },
      ExportAllDeclaration: (node) =>
        check(node.source, { typeOnly: typeOnly(node, 'exportKind'), dynamic: false }),
      ImportExpression: (node) => check(node.source, { typeOnly: false, dynamic: true }),
      // typescript-eslint's node for `typeof import('…')`; core ESLint does not know the name.
      ['TSImportType'](/** @type {any} */ node) {
        check(node.argument, { typeOnly: true, dynamic: false });
      },
      'Program:exit': reportStale,
    };
  },
};

/** The local plugin, registered as `switchyard` in eslint.config.js. */
export default { meta: { name: 'switchyard-layers' }, rules: { layers: layersRule } };
