export * from './types.js';
export * from './errors.js';
export { loadManifests, loadManifestTexts, validateManifests, validateManifestTexts } from './loader.js';
export type { ManifestText } from './loader.js';
export { expandManifestPaths } from './documents.js';
export { NAMESPACE_NAME_LABEL, DEFAULT_NAMESPACE } from './convert.js';
