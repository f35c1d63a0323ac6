// Bundles the agent process's program (dist/cli/agent-entry.js, built by tsc first) into
// dist/agent-bundle/: one module graph with neither comments nor layout, which V8 keeps the text
// of as long as the process lives (docs/agent.md, "the floor under the data"). Native and
// worker-spawning packages stay where they are, loaded from node_modules.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

const outdir = 'dist/agent-bundle';
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { entry: 'dist/cli/agent-entry.js' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  // koffi is native, pino starts worker threads from its own files, etcd3 brings gRPC.
  external: ['koffi', 'pino', 'pino-pretty', 'etcd3'],
  // CommonJS packages inside an ES module bundle still call require().
  banner: {
    js: "import { createRequire as __syRequire } from 'node:module'; const require = __syRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
