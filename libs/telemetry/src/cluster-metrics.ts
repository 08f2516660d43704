import { Counter, type Registry } from 'prom-client';

/**
 * Worker processes the local cluster's supervisor replaced (`m3ae train --local`, `m3ae finetune --workers N`),
 * by worker slot. Counted from the first restart; served by whichever registry it is added to (the coordinator's,
 * which runs in the same process).
 */
export class WorkerRestartMetrics {
  private readonly restarts: Counter<'run' | 'slot'>;

  constructor(private readonly run: string) {
    this.restarts = new Counter({
      name: 'm3ae_worker_restarts_total',
      help: 'Worker processes of the local cluster that died (any exit code or signal) and were started again, by worker slot',
      labelNames: ['run', 'slot'],
      registers: [],
    });
  }

  /** Serves the counter from `registry` as well (idempotent). */
  addTo(registry: Registry): void {
    if (!registry.getSingleMetric('m3ae_worker_restarts_total')) registry.registerMetric(this.restarts);
  }

  restarted(slot: number): void {
    this.restarts.inc({ run: this.run, slot: String(slot) });
  }

  /** Restarts so far (all slots). */
  async total(): Promise<number> {
    return (await this.restarts.get()).values.reduce((a, v) => a + v.value, 0);
  }
}
