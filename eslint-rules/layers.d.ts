/** Types for layers.js (plain JS so that eslint.config.js loads it without a build). */
import type { ESLint, Rule } from 'eslint';

export interface KnownViolation {
  file: string;
  import: string;
}
export const ROOT: string;
export const layersRule: Rule.RuleModule;
declare const plugin: ESLint.Plugin;
export default plugin;
