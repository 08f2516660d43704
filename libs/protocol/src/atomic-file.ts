import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * What {@link writeFileAtomic} writes: a string (UTF-8), bytes, a list of byte chunks written one after another
 * (large files without one copy of the whole in memory), or a function that writes through the open handle.
 */
export type AtomicContent = string | Uint8Array | readonly Uint8Array[] | ((file: FileHandle) => Promise<void>);

/** The temporary files of {@link writeFileAtomic}: `.<name>.tmp-<pid>-<8 hex>`, next to their target. */
const ATOMIC_TEMP_RE = /^\..+\.tmp-\d+-[0-9a-f]{8}$/;

/** True for the name of a temporary file that an interrupted {@link writeFileAtomic} may have left. */
export function isAtomicTemp(name: string): boolean {
  return ATOMIC_TEMP_RE.test(name);
}

/** Writes with at most 1 GiB per call (the most one `write` may take), until every byte is written. */
async function writeFully(file: FileHandle, bytes: Uint8Array): Promise<void> {
  const limit = 1 << 30;
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await file.write(bytes, done, Math.min(limit, bytes.byteLength - done));
    done += bytesWritten;
  }
}

/** Makes a rename durable: on Linux the directory entry is only on disk after the directory is fsynced. */
async function syncDirectory(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } catch (e) {
    // Some file systems (and Windows) refuse fsync on a directory; the rename itself has still happened.
    if (!(e instanceof Error && 'code' in e && (e.code === 'EINVAL' || e.code === 'EPERM' || e.code === 'EISDIR'))) throw e;
  } finally {
    await d.close();
  }
}

/**
 * Writes `path` so that it exists complete or not at all: a temporary file in the same directory, fsync, rename over
 * the target, fsync of the directory. A crash leaves the old file or the new one, never a torn one; a failed write
 * (a full disk, say) removes its temporary file and throws the file system's error unchanged, for the caller to say
 * what it was writing.
 */
export async function writeFileAtomic(path: string, content: AtomicContent): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  let file: FileHandle | undefined = await open(tmp, 'wx');
  try {
    if (typeof content === 'function') await content(file);
    else if (typeof content === 'string') await file.writeFile(content, 'utf8');
    else for (const chunk of content instanceof Uint8Array ? [content] : content) await writeFully(file, chunk);
    await file.sync();
    await file.close();
    file = undefined;
    await rename(tmp, path);
  } catch (e) {
    await file?.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  await syncDirectory(dirname(path));
}

/**
 * What to do about a failed write, from the file system's error code: the first half of a fix whose second half
 * (where else to write) the caller knows.
 */
export function writeFailureAdvice(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'free space on that volume';
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return 'make the directory writable for this process';
  return 'check the directory';
}
