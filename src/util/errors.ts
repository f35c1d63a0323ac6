/** The message of anything thrown, for logs and for wrapping as `new Error(`…: ${errorMessage(e)}`, { cause: e })`. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
