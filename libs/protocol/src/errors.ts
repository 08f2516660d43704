/** Every error the protocol raises names what was wrong; `field` is a dotted path into the checked object. */
export class ProtocolError extends Error {
  override readonly name: string = 'ProtocolError';
}

/** A run configuration (file, environment or flags) that does not fit the schema. */
export class ConfigError extends ProtocolError {
  override readonly name = 'ConfigError';
  constructor(
    message: string,
    readonly issues: readonly string[] = [],
  ) {
    super(message);
  }
}

/** A job payload or a contribution message that does not fit its schema. */
export class PayloadError extends ProtocolError {
  override readonly name = 'PayloadError';
}

export type BlobFault = 'missing' | 'truncated' | 'checksum' | 'layout' | 'non-finite' | 'length';

/** A blob that cannot be used: a chunk is gone, its bytes are short, its checksum differs, it holds NaN/Inf… */
export class BlobError extends ProtocolError {
  override readonly name = 'BlobError';
  constructor(
    readonly fault: BlobFault,
    message: string,
  ) {
    super(message);
  }
}

/** A Redis that refused a write because it is full (`maxmemory` with the `noeviction` policy the run requires). */
export class RedisFullError extends ProtocolError {
  override readonly name = 'RedisFullError';
}
