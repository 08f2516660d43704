import { parser } from '@prometheus-io/lezer-promql';

export interface SelectorUse {
  metric: string;
  labels: string[];
}

export interface PromqlAnalysis {
  /** Syntax errors (empty when the expression parses). */
  errors: string[];
  selectors: SelectorUse[];
  /** For each aggregation: its `by (…)` labels and the metrics inside it. */
  groupings: { labels: string[]; metrics: string[] }[];
}

/**
 * Grafana's variables made concrete, so that the expression is plain PromQL: `$__rate_interval` and the other
 * interval variables become a duration, `$var` / `${var}` / `[[var]]` a string value.
 */
export function substituteGrafanaVariables(expr: string): string {
  return expr
    .replace(/\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g, '5m')
    .replace(/\$\{[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_][A-Za-z0-9_]*\]\]/g, 'x');
}

/** Parses a PromQL expression with Prometheus's own (lezer) grammar and lists what it selects. */
export function analysePromql(expr: string): PromqlAnalysis {
  const tree = parser.parse(expr);
  const errors: string[] = [];
  const selectors: SelectorUse[] = [];
  const groupings: PromqlAnalysis['groupings'] = [];
  const text = (from: number, to: number): string => expr.slice(from, to);
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(`syntax error at ${node.from}: …${expr.slice(Math.max(0, node.from - 20), node.from + 20)}…`);
      if (node.name === 'VectorSelector') {
        const id = node.node.getChild('Identifier');
        const labels: string[] = [];
        const matchers = node.node.getChild('LabelMatchers');
        for (let c = matchers?.firstChild; c; c = c.nextSibling) {
          const name = c.getChild('LabelName');
          if (name) labels.push(text(name.from, name.to));
        }
        if (id) selectors.push({ metric: text(id.from, id.to), labels });
        else errors.push(`selector without a metric name: ${text(node.from, node.to)}`);
      }
      if (node.name === 'AggregateExpr') {
        const modifier = node.node.getChild('AggregateModifier');
        const grouping = modifier?.getChild('GroupingLabels');
        if (modifier?.getChild('By') && grouping) {
          const labels: string[] = [];
          for (let c = grouping.firstChild; c; c = c.nextSibling) if (c.name === 'LabelName') labels.push(text(c.from, c.to));
          const metrics: string[] = [];
          node.node.cursor().iterate((inner) => {
            if (inner.name === 'VectorSelector') {
              const id = inner.node.getChild('Identifier');
              if (id) metrics.push(text(id.from, id.to));
            }
          });
          groupings.push({ labels, metrics });
        }
      }
    },
  });
  return { errors, selectors, groupings };
}
