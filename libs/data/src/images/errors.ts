/** Why an image was refused. */
export type ImageErrorReason = 'not-found' | 'empty' | 'corrupt' | 'too-large' | 'unsupported-format';

/**
 * A clean refusal of one image (maps to the `unreadable-image` skip). `file` is the path, or `<buffer>` for
 * bytes; `reason` says what is wrong and `message` carries the detail.
 */
export class ImageDecodeError extends Error {
  constructor(
    readonly file: string,
    readonly reason: ImageErrorReason,
    detail: string,
  ) {
    super(`${file}: ${reason}: ${detail}`);
    this.name = 'ImageDecodeError';
  }
}
