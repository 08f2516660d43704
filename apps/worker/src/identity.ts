import { hostname } from 'node:os';

/** A worker's id: stable for the life of the process, unique across pods (`POD_NAME` on Kubernetes). */
export function workerId(env: NodeJS.ProcessEnv = process.env): string {
  const host = env['POD_NAME'] ?? hostname();
  return `${host}-${process.pid}`;
}
