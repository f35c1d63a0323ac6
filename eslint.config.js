import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import layers from './eslint-rules/layers.js';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'bench-results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['bin/**', 'scripts/**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
  // The layers of docs/architecture.md. eslint.config.js itself is checked for entries whose file is gone.
  {
    files: ['src/**/*.ts', 'web/**/*.ts', 'web/**/*.tsx', 'eslint.config.js'],
    plugins: { switchyard: layers },
    rules: {
      'switchyard/layers': 'error',
    },
  },
);
