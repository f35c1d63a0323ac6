/**
 * The layers of Switchyard as data, and the one function that judges an import against them.
 * docs/architecture.md explains the table; eslint-rules/layers.js applies it to every import in src/ and web/.
 *
 * Paths here are repository-relative with forward slashes and the source extension (`src/calc/build.ts`),
 * whatever the import specifier says (`../calc/build.js`).
 */

/**
 * Top to bottom: a folder imports only folders on a LOWER line. Folders on the same line are siblings and do
 * not import each other, except as SIBLING_EXCEPTIONS says.
 */
export const LAYERS = [
  ['cli', 'console', 'web'],
  ['advise', 'bench'],
  ['lab'],
  ['agent', 'datastore'],
  ['observe'],
  ['dataplane'],
  ['calc'],
  ['ir'],
  ['model'],
  ['bpf', 'netns', 'util'],
];

/** The floor: these import nothing of the project except util (and bpf uses netns). */
export const FLOOR = ['bpf', 'netns', 'util'];

/** The sibling imports the layers allow; each is one-way. (advise → bench is in NARROW_IMPORTS.) */
export const SIBLING_EXCEPTIONS = [
  { from: 'cli', to: 'console', why: '`switchyard console` starts the console server' },
  { from: 'agent', to: 'datastore', why: 'the etcd source reads the key layout' },
  { from: 'bpf', to: 'util', why: 'util is the shared floor' },
  { from: 'bpf', to: 'netns', why: 'one libc loader and one withNetns for namespaced BPF work' },
  { from: 'netns', to: 'util', why: 'util is the shared floor' },
];

/**
 * Imports decided by an exact file list instead of the layers: readers of bench results see its leaf modules,
 * never the runner and its scenarios. (This is also what allows advise, a sibling of bench, to read them.)
 */
export const NARROW_IMPORTS = [
  {
    from: 'advise',
    to: 'bench',
    only: ['src/bench/results.ts'],
    why: 'bench results are read through src/bench/results.ts',
  },
  {
    from: 'console',
    to: 'bench',
    only: ['src/bench/results.ts'],
    why: 'the console reads (and draws) bench results through src/bench/results.ts',
  },
];

/** What a backend folder src/dataplane/<name>/ builds on, besides its own files and the contract src/dataplane/*.ts. */
export const BACKEND_MAY_IMPORT = ['ir', 'bpf', 'netns', 'util'];

/** The shared netfilter kit src/dataplane/netfilter/ and the backends that use it. */
export const NETFILTER_KIT = 'netfilter';
export const NETFILTER_BACKENDS = ['iptables', 'nftables'];

/** The one file that loads backends (lazily, with import()). */
export const REGISTRY = 'src/dataplane/registry.ts';

/** Folders whose files may reach into backend internals: micro-benchmarks of one mechanism. */
export const BACKEND_INTERNALS_READERS = ['bench'];

/**
 * Which part of the project a path belongs to: `folder` is the top folder under src/ (or `web`), `backend` the
 * folder under src/dataplane/ if any. null outside src/ and web/ (tests and scripts import anything).
 * @param {string} rel repository-relative path
 * @returns {{ folder: string, backend?: string, label: string } | null}
 */
export function unitOf(rel) {
  const parts = rel.split('/');
  if (parts[0] === 'web' && parts.length >= 2) return { folder: 'web', label: 'web' };
  if (parts[0] !== 'src' || parts.length < 3) return null;
  const folder = parts[1];
  if (folder === 'dataplane' && parts.length >= 4) {
    return { folder, backend: parts[2], label: `src/dataplane/${parts[2]}` };
  }
  return { folder, label: `src/${folder}` };
}

/**
 * How messages name the side of an import: its unit's label, or the registry file by name.
 * @param {string} rel repository-relative path
 */
export function labelOf(rel) {
  return rel === REGISTRY ? REGISTRY : (unitOf(rel)?.label ?? rel);
}

/** @param {string} folder */
export function layerOf(folder) {
  return LAYERS.findIndex((line) => line.includes(folder));
}

/**
 * Why `from` may not import `to`, or null when it may.
 * @param {string} from importing file, repository-relative
 * @param {string} to imported file, repository-relative
 * @param {{ typeOnly: boolean, dynamic: boolean }} how `import type` (no code loaded) / `import()`
 * @returns {string | null}
 */
export function checkImport(from, to, how) {
  const a = unitOf(from);
  const b = unitOf(to);
  if (!a || !b) return null;
  if (to === REGISTRY && from !== REGISTRY && a.folder === 'dataplane' && !a.backend) {
    return 'the contract files sit below the backends and the registry above them';
  }
  if (a.label === b.label) return null;
  if (a.folder === 'web')
    return how.typeOnly ? null : 'web runs in the browser: it may only `import type` from src/';
  if (b.backend) return backendImport(a, b, from, to, how);
  if (a.backend) return backendDependency(b, to);
  return folderImport(a.folder, b.folder, to);
}

/**
 * An import of a backend folder's file from another unit.
 * @param {{ folder: string, backend?: string }} a
 * @param {{ folder: string, backend?: string }} b
 * @param {string} from
 * @param {string} to
 * @param {{ typeOnly: boolean, dynamic: boolean }} how
 */
function backendImport(a, b, from, to, how) {
  if (BACKEND_INTERNALS_READERS.includes(a.folder)) return null;
  if (b.backend === NETFILTER_KIT) {
    if (a.backend && NETFILTER_BACKENDS.includes(a.backend)) return null;
    return `src/dataplane/${NETFILTER_KIT} is the shared kit of the ${NETFILTER_BACKENDS.join(' and ')} backends only`;
  }
  if (from === REGISTRY) {
    if (to !== `src/dataplane/${b.backend}/index.ts`)
      return 'the registry loads a backend through its index.ts only';
    return how.dynamic || how.typeOnly ? null : 'the registry loads backends lazily, with import()';
  }
  if (a.folder === 'observe') return 'observe is backend-neutral';
  if (a.backend) return 'a backend never imports another backend';
  return "a backend's files are its own: use the Backend contract (src/dataplane/backend.ts, registry.ts)";
}

/**
 * What a backend folder (or the netfilter kit) imports outside itself (other backends: backendImport).
 * @param {{ folder: string, backend?: string }} b
 * @param {string} to
 */
function backendDependency(b, to) {
  if (to === REGISTRY) return 'the registry loads the backends, so a backend never imports it';
  if (b.folder === 'dataplane') return null;
  if (BACKEND_MAY_IMPORT.includes(b.folder)) return null;
  const allowed = [...BACKEND_MAY_IMPORT, 'the contract src/dataplane/*.ts'];
  return `a backend builds on the IR alone: it imports ${allowed.join(', ')}`;
}

/**
 * The layer rule between two top folders (neither side a backend folder).
 * @param {string} from
 * @param {string} to
 * @param {string} toFile
 */
function folderImport(from, to, toFile) {
  const narrow = NARROW_IMPORTS.find((n) => n.from === from && n.to === to);
  if (narrow) return narrow.only.includes(toFile) ? null : narrow.why;
  if (SIBLING_EXCEPTIONS.some((e) => e.from === from && e.to === to)) return null;
  const la = layerOf(from);
  const lb = layerOf(to);
  if (la < 0 || lb < 0) {
    return `src/${la < 0 ? from : to} is not in the layer table (eslint-rules/layers-table.js, docs/architecture.md)`;
  }
  if (FLOOR.includes(from)) return `${from} is a floor folder: it imports nothing of the project but util`;
  if (la === lb) return siblingReason(from, to);
  if (la > lb) return `${to} is a layer above ${from}`;
  return null;
}

/**
 * Why two siblings may not import each other in this direction.
 * @param {string} from
 * @param {string} to
 */
function siblingReason(from, to) {
  const reverse = SIBLING_EXCEPTIONS.find((e) => e.from === to && e.to === from);
  if (reverse) return `${to} and ${from} share a layer and only ${to} → ${from} is allowed (${reverse.why})`;
  return `${from} and ${to} are siblings in one layer and do not import each other`;
}

/**
 * Every folder-level import the table allows, as `from → to` pairs, for checking that the table has no cycle.
 * Backend folders and the netfilter kit count as `dataplane/<name>`; the registry, which sits above the
 * backends while the contract files sit below them, counts as a unit of its own.
 * @param {string[]} backends backend folder names
 * @returns {Array<[string, string]>}
 */
export function allowedFolderEdges(backends) {
  const folders = LAYERS.flat();
  const units = [...folders, REGISTRY, ...backends.map((b) => `dataplane/${b}`)];
  /** @type {Array<[string, string]>} */
  const edges = [];
  for (const from of units) {
    for (const to of units) {
      const how = { typeOnly: false, dynamic: true };
      if (from !== to && checkImport(representative(from, 'from'), representative(to, 'to'), how) === null) {
        edges.push([from, to]);
      }
    }
  }
  return edges;
}

/**
 * A file that stands for a unit in allowedFolderEdges: a backend's index.ts (what the registry loads), the
 * contract file backend.ts for src/dataplane, the first allowed file of a narrowed target.
 * @param {string} unit
 * @param {'from' | 'to'} side
 */
function representative(unit, side) {
  if (unit === 'web') return 'web/x.ts';
  if (unit === REGISTRY) return REGISTRY;
  if (unit.startsWith('dataplane/')) return `src/${unit}/index.ts`;
  if (unit === 'dataplane') return 'src/dataplane/backend.ts';
  const narrowed = side === 'to' && NARROW_IMPORTS.find((n) => n.to === unit);
  return narrowed ? narrowed.only[0] : `src/${unit}/x.ts`;
}

/**
 * A cycle in a directed graph, as the list of nodes around it, or null when there is none.
 * @param {Array<[string, string]>} edges
 * @returns {string[] | null}
 */
export function findCycle(edges) {
  /** @type {Map<string, string[]>} */
  const next = new Map();
  for (const [from, to] of edges) next.set(from, [...(next.get(from) ?? []), to]);
  /** @type {Map<string, 'open' | 'done'>} */
  const state = new Map();
  /** @type {string[]} */
  const path = [];
  /** @param {string} node @returns {string[] | null} */
  const visit = (node) => {
    if (state.get(node) === 'done') return null;
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node];
    state.set(node, 'open');
    path.push(node);
    for (const to of next.get(node) ?? []) {
      const cycle = visit(to);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, 'done');
    return null;
  };
  for (const node of next.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return null;
}
