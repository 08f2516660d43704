import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportedSeries, TARGET_LABELS } from './helpers/catalog.js';
import { analysePromql, substituteGrafanaVariables } from './helpers/promql.js';

const DASHBOARD = join(import.meta.dirname, '../../../k8s/base/monitoring/m3ae-dashboard.json');

interface Target {
  expr: string;
  legendFormat?: string;
  refId: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: string | { query: string } }[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

/** Every PromQL expression in the dashboard: panel targets and the query variables' label_values(…). */
function expressions(): { where: string; expr: string; legend?: string }[] {
  const out: { where: string; expr: string; legend?: string }[] = [];
  for (const p of dashboard.panels) {
    for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr, ...(t.legendFormat ? { legend: t.legendFormat } : {}) });
  }
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    const m = /^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$/.exec(q.trim());
    if (!m) throw new Error(`variable ${v.name}: query ${JSON.stringify(q)} is not label_values(selector, label)`);
    out.push({ where: `variable $${v.name}`, expr: m[1] as string, legend: `{{${m[2]}}}` });
  }
  return out;
}

describe('Grafana dashboard', () => {
  let series: Map<string, Set<string>>;
  beforeAll(async () => {
    series = await exportedSeries();
  });

  it('is an importable dashboard: uid, a run variable, unique panel ids, Prometheus datasource from a variable', () => {
    expect(dashboard.uid).toBe('m3ae-training');
    const vars = dashboard.templating.list.map((v) => v.name);
    expect(vars).toEqual(expect.arrayContaining(['datasource', 'run']));
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      // Every query is scoped to the selected run.
      for (const t of p.targets ?? []) expect(t.expr, `${p.title}: ${t.expr}`).toContain('run="$run"');
    }
  });

  it('has the panels the issue lists', () => {
    const titles = dashboard.panels.filter((p) => p.type === 'row').map((p) => p.title);
    expect(titles).toEqual(['Run', 'Training', 'Throughput', 'Step-time breakdown', 'Workers and queue', 'Failures and retries', 'Data', 'Memory and event loop', 'Fine-tuning']);
    const used = new Set(expressions().flatMap((e) => analysePromql(substituteGrafanaVariables(e.expr)).selectors.map((s) => s.metric)));
    for (const m of [
      'm3ae_loss', 'm3ae_accuracy_ratio', 'm3ae_learning_rate', 'm3ae_gradient_norm', 'm3ae_samples_total', 'm3ae_tokens_total',
      'm3ae_step_duration_seconds_bucket', 'm3ae_step_phase_seconds_total', 'm3ae_job_phase_seconds_total', 'm3ae_worker_job_phase_seconds_total', 'm3ae_workers_active',
      'bullmq_jobs', 'm3ae_jobs_rejected_total', 'm3ae_jobs_retried_total', 'm3ae_jobs_redelivered_total', 'm3ae_jobs_duplicated_total',
      'm3ae_backup_jobs_total', 'm3ae_samples_skipped_total', 'm3ae_tensors', 'm3ae_tensor_memory_bytes', 'nodejs_eventloop_lag_p99_seconds',
      'm3ae_checkpoint_age_seconds', 'm3ae_blob_bytes_total', 'm3ae_validation_score',
    ]) {
      expect(used, m).toContain(m);
    }
  });

  it('parses every query and names only metrics and labels the services really export', () => {
    const problems: string[] = [];
    const all = expressions();
    expect(all.length).toBeGreaterThan(40);
    for (const { where, expr, legend } of all) {
      const a = analysePromql(substituteGrafanaVariables(expr));
      for (const e of a.errors) problems.push(`${where}: ${e} in ${expr}`);
      if (a.selectors.length === 0) problems.push(`${where}: selects no metric: ${expr}`);
      const labelsInExpr = new Set<string>(TARGET_LABELS);
      for (const s of a.selectors) {
        const known = series.get(s.metric);
        if (!known) {
          problems.push(`${where}: metric ${s.metric} is not exported by the coordinator, the workers or BullMQ`);
          continue;
        }
        for (const l of known) labelsInExpr.add(l);
        for (const l of s.labels) if (!known.has(l) && !TARGET_LABELS.has(l)) problems.push(`${where}: ${s.metric} has no label ${l}`);
      }
      for (const g of a.groupings) {
        const available = new Set<string>(TARGET_LABELS);
        for (const m of g.metrics) for (const l of series.get(m) ?? []) available.add(l);
        for (const l of g.labels) if (!available.has(l)) problems.push(`${where}: groups by ${l}, which none of ${g.metrics.join(', ')} has`);
      }
      for (const m of (legend ?? '').matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)) {
        if (!labelsInExpr.has(m[1] as string)) problems.push(`${where}: legend {{${m[1]}}} names a label the query cannot return`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('the checks catch a misspelt metric, an unknown label and a syntax error', () => {
    const bad = analysePromql(substituteGrafanaVariables('sum by (phase) (rate(m3ae_step_phase_second_total{run="$run", stage="x"}[$__rate_interval]))'));
    expect(bad.errors).toEqual([]);
    expect(series.has(bad.selectors[0]?.metric as string)).toBe(false);
    expect(series.get('m3ae_step_phase_seconds_total')?.has('stage')).toBe(false);
    expect(analysePromql('sum(rate(m3ae_samples_total[5m])').errors.length).toBeGreaterThan(0);
  });
});
