/** A malformed or unreadable safetensors file, or a tensor that cannot be written as asked. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}
