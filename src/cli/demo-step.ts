/** One step of `switchyard demo`: what it shows, the command a user would type, and the run. */
export interface DemoStep {
  title: string;
  command: string;
  run(): Promise<string> | string;
}
