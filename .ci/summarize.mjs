// Adds up vitest's JSON reports (one per project) into the closing line CI reads: "N passed, N failed".
// A non-zero test command with no failing test counted (a build or a whole project that failed to run)
// still counts as one failure, so that the line never claims a green run that was not.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, rcText] = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
  const report = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += (report.numFailedTests ?? 0);
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  for (const suite of report.testResults ?? []) {
    const assertions = suite.assertionResults ?? [];
    for (const a of assertions.filter((x) => x.status === 'failed')) {
      failures.push(`${suite.name} > ${a.fullName ?? a.title}: ${firstLine(a.failureMessages?.[0])}`);
    }
    if (suite.status === 'failed' && assertions.every((a) => a.status !== 'failed')) {
      failed += 1;
      failures.push(`${suite.name}: ${firstLine(suite.message)}`);
    }
  }
}
if (Number(rcText) !== 0 && failed === 0) failed = 1;
// Name each failure once more at the end, where a reader of only the tail of the log will see it.
for (const f of failures) console.log(`FAILED ${f}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);

function firstLine(text) {
  return String(text ?? '(no message)').split('\n').find((l) => l.trim() !== '')?.trim().slice(0, 300) ?? '(no message)';
}
