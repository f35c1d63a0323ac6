/** How long lab work reports progress; the CLI backs it with a bar on a TTY, tests with nothing. */
export interface Progress {
  phase(label: string, total: number): void;
  tick(): void;
  done(): void;
}

export const silentProgress: Progress = {
  phase: () => undefined,
  tick: () => undefined,
  done: () => undefined,
};
