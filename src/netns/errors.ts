/** Something the machine lacks (root, a tool) rather than something the user asked for wrongly. */
export class PrerequisiteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrerequisiteError';
  }
}

/** A kernel-facing command failed; the message names the command and what the kernel said. */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}
