/** The exit code of a command ended by a signal (128 + its number), as shells report it. */
export const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;

/** The exit code for `signal` (a signal without an entry: SIGINT's). */
export function signalExitCode(signal: string): number {
  return (SIGNAL_EXIT_CODES as Record<string, number>)[signal] ?? SIGNAL_EXIT_CODES.SIGINT;
}

/**
 * A command's stop request: the first SIGINT or SIGTERM aborts `signal` (the work stops at its next safe point), and
 * `exitCode` follows the signal that came. `dispose` removes the handlers.
 */
export class StopOnSignals {
  private readonly controller = new AbortController();
  private received: NodeJS.Signals | undefined;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.received ??= signal;
    this.controller.abort();
  };

  constructor() {
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** 130 after SIGINT, 143 after SIGTERM. */
  get exitCode(): number {
    return signalExitCode(this.received ?? 'SIGINT');
  }

  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
