import { execFileSync } from 'node:child_process';

/**
 * A Python interpreter that can `import` the given module, for optional cross-checks against PyTorch or the
 * reference safetensors package (neither is needed by the project; CI may lack them). `M3AE_PYTHON` overrides;
 * otherwise `python3` on the PATH, then Debian's `/usr/bin/python3` (where `apt-get install python3-torch` puts
 * torch when a pyenv interpreter shadows it).
 */
export function findPython(module: string): string | undefined {
  const candidates = [process.env['M3AE_PYTHON'], 'python3', '/usr/bin/python3'].filter((p): p is string => !!p);
  for (const py of candidates) {
    try {
      execFileSync(py, ['-c', `import ${module}`], { stdio: 'ignore', timeout: 60_000 });
      return py;
    } catch {
      // not this one
    }
  }
  return undefined;
}
