import { pino, stdSerializers, type DestinationStream, type Logger, type LoggerOptions as PinoOptions } from 'pino';
import pretty from 'pino-pretty';
import { REDACTED, scrubSecrets, scrubValue, secretRedactPaths } from './redact.js';

export type { Logger } from 'pino';

/** The ids every log line of a run can carry; pass them as bindings, or to `logger.child({ step, job })`. */
export interface LogBindings {
  /** Run id (everything in Redis is namespaced by it). */
  run?: string;
  /** Training step. */
  step?: number;
  /** Micro-batch job id. */
  job?: string;
  /** Worker id. */
  worker?: string;
  /** tfjs backend name. */
  backend?: string;
}

export type LogFormat = 'json' | 'pretty';

export interface CreateLoggerOptions {
  /** Component name (`coordinator`, `worker`, `prepare`, …): the `name` field of every line. */
  name: string;
  bindings?: LogBindings;
  /** @defaultValue `M3AE_LOG_LEVEL` or `LOG_LEVEL`, else `info` */
  level?: string;
  /**
   * `json` (one object per line, for collectors) or `pretty` (colourised, for a terminal).
   * @defaultValue `M3AE_LOG_FORMAT` if set, else `pretty` when the destination is a TTY and NODE_ENV is not
   * `production`, else `json`
   */
  format?: LogFormat;
  /** Where lines go. @defaultValue standard output */
  destination?: DestinationStream;
  /** More pino redact paths on top of the built-in secret keys. */
  redactPaths?: readonly string[];
  /** Environment to read the defaults from. @defaultValue process.env */
  env?: NodeJS.ProcessEnv;
}

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/**
 * The one logger factory of the system: pino, JSON by default, with run/step/job/worker ids as bindings and
 * secrets removed twice — by key (pino `redact`: `password`, `token`, `authorization`, …) and by content
 * (URLs with credentials, bearer tokens, `password=…` in any string, message or error).
 */
export function createLogger(options: CreateLoggerOptions): Logger {
  const env = options.env ?? process.env;
  const level = options.level ?? env['M3AE_LOG_LEVEL'] ?? env['LOG_LEVEL'] ?? 'info';
  if (!LEVELS.has(level)) {
    throw new Error(`logger: level ${JSON.stringify(level)} is not one of ${[...LEVELS].join(', ')}`);
  }
  const format = options.format ?? resolveFormat(env, options.destination);
  const pinoOptions: PinoOptions = {
    name: options.name,
    level,
    redact: { paths: secretRedactPaths(options.redactPaths), censor: REDACTED },
    serializers: { err: scrubError, error: scrubError },
    formatters: {
      bindings: (bindings) => scrubValue(bindings),
      log: (record) => scrubValue(record),
    },
    hooks: {
      logMethod(args, method) {
        const scrubbed = args.map((a: unknown) => (typeof a === 'string' ? scrubSecrets(a) : a)) as Parameters<typeof method>;
        method.apply(this, scrubbed);
      },
    },
  };
  const destination =
    format === 'pretty'
      ? pretty({
          colorize: true,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname',
          destination: options.destination ?? 1,
        })
      : options.destination;
  const logger = destination ? pino(pinoOptions, destination) : pino(pinoOptions);
  // pino formats only the root's bindings; children are created from this instance by prototype, so one
  // override here scrubs the bindings of every descendant (`logger.child({ redisUrl })`).
  const child = logger.child as unknown as (this: unknown, bindings: object, options?: object) => unknown;
  Object.defineProperty(logger, 'child', {
    configurable: true,
    writable: true,
    value: function scrubbedChild(this: unknown, bindings: object, options?: object): unknown {
      return child.call(this, scrubValue(bindings), options);
    },
  });
  return options.bindings ? logger.child(definedOnly(options.bindings)) : logger;
}

function resolveFormat(env: NodeJS.ProcessEnv, destination: DestinationStream | undefined): LogFormat {
  const explicit = env['M3AE_LOG_FORMAT'];
  if (explicit !== undefined && explicit !== '') {
    if (explicit !== 'json' && explicit !== 'pretty') {
      throw new Error(`logger: M3AE_LOG_FORMAT ${JSON.stringify(explicit)} is not one of json, pretty`);
    }
    return explicit;
  }
  const tty = destination === undefined ? process.stdout.isTTY === true : (destination as { isTTY?: boolean }).isTTY === true;
  return tty && env['NODE_ENV'] !== 'production' ? 'pretty' : 'json';
}

function scrubError(err: unknown): unknown {
  if (!(err instanceof Error)) return scrubValue(err);
  const serialized = { ...stdSerializers.err(err) } as Record<string, unknown>;
  return scrubValue(serialized);
}

function definedOnly(bindings: LogBindings): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(bindings)) if (v !== undefined) out[k] = v as string | number;
  return out;
}
