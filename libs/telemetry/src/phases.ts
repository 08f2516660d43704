/**
 * Where a synchronous step's wall time goes on the coordinator; the phases add up to the step's duration
 * (`idle` is the wait for results while workers compute).
 */
export const STEP_PHASES = ['publish', 'enqueue', 'idle', 'reduction', 'optimizer', 'checkpoint'] as const;
export type StepPhase = (typeof STEP_PHASES)[number];

/** Where one micro-batch job's time goes on a worker (parameter fetch, forward/backward, encoding, upload). */
export const JOB_PHASES = ['fetch', 'compute', 'encode', 'upload'] as const;
export type JobPhase = (typeof JOB_PHASES)[number];
