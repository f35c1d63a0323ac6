/**
 * An agent process's program when it runs bundled (scripts/bundle-agent.mjs; launch.ts picks it):
 * the CLI with the `agent` command alone, as `switchyard agent` runs it, without the other
 * commands' modules in the bundle.
 */
import { programOf, runProgram } from './program.js';

process.exitCode = await runProgram(process.argv, (json) => programOf([() => import('./agent.js')], json));
