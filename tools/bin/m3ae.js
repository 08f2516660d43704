#!/usr/bin/env node
// The `m3ae` command. The TypeScript sources are compiled by `npm ci` (root `prepare` script).
import { main } from '../dist/cli.js';

// A command is over when main() settles: whatever is still open (a Redis connection that retries, an HTTP
// server, a timer) must not keep the process alive — on Kubernetes a pod that failed would stay Running.
const GRACE_MS = 3000;

main(process.argv).then(
  () => setTimeout(() => process.exit(), GRACE_MS).unref(),
  (err) => {
    process.stderr.write(`m3ae: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(process.exitCode || 1);
  },
);
