/** What the long-running commands (agent, console) share: their bearer token file, and running until told to stop. */
import { readFileSync } from 'node:fs';
import { CliError } from './output.js';

/** The bearer token in a file, trimmed; a short one is refused (it would be guessable). */
export function readTokenFile(file: string): string {
  const token = readFileSync(file, 'utf8').trim();
  if (token.length < 16) throw new CliError(`the token in ${file} is too short (16 characters at least)`, 2);
  return token;
}

/** Resolves once SIGTERM or SIGINT has arrived and `stop` has settled (failed or not). */
export function untilStopSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      void stop().then(resolve, resolve);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
