import { spawn, spawnSync } from 'node:child_process';

/** How CI gets promtool; the tests fail with this text rather than skip when it is missing. */
export const PROMTOOL_INSTALL = 'apt-get install -y prometheus   (Debian\u2019s package ships promtool; .ci/run installs it when missing)';

export function promtoolPath(): string {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`promtool is not on PATH, so the /metrics output cannot be validated. Install it: ${PROMTOOL_INSTALL}`);
  }
  return 'promtool';
}

/** Runs `promtool check metrics` on an exposition; returns its exit code and everything it printed. */
export async function promtoolCheckMetrics(text: string): Promise<{ code: number; output: string }> {
  const bin = promtoolPath();
  return await new Promise((resolve, reject) => {
    const child = spawn(bin, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
    child.stdin.end(text);
  });
}
