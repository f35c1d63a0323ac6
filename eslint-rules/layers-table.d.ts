/** Types for layers-table.js (plain JS so that eslint.config.js loads it without a build). */
export interface Unit {
  folder: string;
  backend?: string;
  label: string;
}
export interface ImportKind {
  typeOnly: boolean;
  dynamic: boolean;
}
export const LAYERS: string[][];
export const FLOOR: string[];
export const SIBLING_EXCEPTIONS: Array<{ from: string; to: string; why: string }>;
export const NARROW_IMPORTS: Array<{ from: string; to: string; only: string[]; why: string }>;
export const BACKEND_MAY_IMPORT: string[];
export const NETFILTER_KIT: string;
export const NETFILTER_BACKENDS: string[];
export const REGISTRY: string;
export const BACKEND_INTERNALS_READERS: string[];
export function unitOf(rel: string): Unit | null;
export function labelOf(rel: string): string;
export function layerOf(folder: string): number;
export function checkImport(from: string, to: string, how: ImportKind): string | null;
export function allowedFolderEdges(backends: string[]): Array<[string, string]>;
export function findCycle(edges: Array<[string, string]>): string[] | null;
