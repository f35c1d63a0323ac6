/** The message of a caught value: an Error's message, anything else as text (a thrown string, say). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
