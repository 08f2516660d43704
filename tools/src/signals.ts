/** The exit code of a command ended by a signal (128 + its number), as shells report it. */
export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

/** The exit code for `signal` (a signal without an entry: SIGINT's). */
export function signalExitCode(signal: string): number {
  return (SIGNAL_EXIT_CODES as Record<string, number>)[signal] ?? SIGNAL_EXIT_CODES.SIGINT;
}
