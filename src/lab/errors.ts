/** A lab request that cannot be carried out as asked; the message says what to change. */
export class LabError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LabError';
  }
}
