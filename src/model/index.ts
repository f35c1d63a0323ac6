export * from './types.js';
export * from './errors.js';
export {
  assembleModel,
  convertDocuments,
  convertManifestFile,
  ConvertedFile,
  type ConvertedDocuments,
  type ConvertedObject,
  loadManifests,
  replacementNeedsCrossChecks,
  loadManifestTexts,
  validateManifestDocuments,
  validateManifests,
  validateManifestTexts,
} from './loader.js';
export type { ManifestDocument } from './documents.js';
export { readManifestDocuments } from './documents.js';
export type { ManifestText } from './loader.js';
export { expandManifestPaths } from './documents.js';
export { NAMESPACE_NAME_LABEL, DEFAULT_NAMESPACE } from './convert.js';
export {
  applyModelChanges,
  changeKey,
  diffModels,
  MODEL_KINDS,
  modelKey,
  objectsByKey,
  type ModelChange,
  type ModelKind,
  type ModelObjects,
} from './changes.js';
