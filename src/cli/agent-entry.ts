/**
 * An agent process's program when it runs bundled (scripts/bundle-agent.mjs; bin/switchyard picks
 * it): the CLI with the `agent` command alone, as `switchyard agent` runs it. It names the agent's
 * module itself rather than through commands.ts's `soloCommands`, whose list of every command
 * would bring their modules into the bundle.
 */
import { programOf, runProgram } from './program.js';

process.exitCode = await runProgram(process.argv, (json) => programOf([() => import('./agent.js')], json));
