import { existsSync } from 'node:fs';

/** Where Debian's mesa-vulkan-drivers (bookworm-backports, Mesa ≥ 24) puts lavapipe's ICD manifest. */
export const LAVAPIPE_ICD_PATHS = ['/usr/share/vulkan/icd.d/lvp_icd.json', '/usr/share/vulkan/icd.d/lvp_icd.x86_64.json'] as const;

/**
 * For tests of the webgpu backend without a GPU: points the Vulkan loader at Mesa's lavapipe (CPU) driver by
 * setting `VK_DRIVER_FILES` (kept when already set) and returns the ICD path. Without lavapipe it returns
 * undefined (the caller skips), except under `CI=true`, where a missing driver is an error
 * (scripts/test-prerequisites.sh installs it), so a webgpu test never passes by not running.
 */
export function useLavapipe(env: NodeJS.ProcessEnv = process.env, candidates: readonly string[] = LAVAPIPE_ICD_PATHS): string | undefined {
  const set = env['VK_DRIVER_FILES'];
  const icd = set !== undefined && set !== '' && existsSync(set) ? set : candidates.find((p) => existsSync(p));
  if (icd === undefined) {
    if (env['CI'] === 'true') {
      throw new Error(
        `lavapipe (Mesa's Vulkan CPU driver) is missing: none of ${candidates.join(', ')} exists; run scripts/test-prerequisites.sh as root (installs mesa-vulkan-drivers and libvulkan1 from bookworm-backports)`,
      );
    }
    return undefined;
  }
  env['VK_DRIVER_FILES'] = icd;
  return icd;
}
