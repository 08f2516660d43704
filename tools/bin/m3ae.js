#!/usr/bin/env node
// The `m3ae` command. The TypeScript sources are compiled by `npm ci` (root `prepare` script).
import { main } from '../dist/cli.js';

main(process.argv).catch((err) => {
  process.stderr.write(`m3ae: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = process.exitCode || 1;
});
