import * as tf from '@tensorflow/tfjs-core';
import type { ParamSpec } from './params.js';

/**
 * Parameters as tfjs variables in one canonically ordered name → variable map: what `M3AEModel` and
 * `DownstreamModel` hold. tfjs variable names are global to the engine, so each carries its owner's prefix.
 */
export class ParamVariables {
  readonly params = new Map<string, tf.Variable>();
  /** The trainable variables in manifest order (the gradient order). */
  readonly trainable: readonly tf.Variable[];
  private disposed = false;

  constructor(specs: readonly ParamSpec[], prefix: string, initial: (spec: ParamSpec, index: number) => Float32Array) {
    specs.forEach((spec, index) => {
      const values = initial(spec, index);
      // tf.variable(init) created outside a tidy would leak its initialiser: build it inside one.
      const v = tf.tidy(() => tf.variable(tf.tensor(values, [...spec.shape], 'float32'), spec.trainable, `${prefix}/${spec.name}`, 'float32'));
      this.params.set(spec.name, v);
    });
    this.trainable = specs.filter((s) => s.trainable).map((s) => this.param(s.name));
  }

  /** A parameter by canonical name (throws on an unknown name). */
  param(name: string): tf.Variable {
    const v = this.params.get(name);
    if (!v) throw new Error(`unknown parameter ${JSON.stringify(name)}`);
    return v;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const v of this.params.values()) v.dispose();
    this.disposed = true;
  }
}
