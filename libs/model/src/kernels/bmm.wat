;; Batched float32 matrix product with 128-bit SIMD, for attention: the wasm backend of TensorFlow.js runs
;; batched products (rank > 2) in a scalar loop; this runs them about an order of magnitude faster.
;;
;;   bmm(a, b, c, G, M, K, N):  C[g] = A[g] · B[g]  for g < G
;;   A [G, M, K], B [G, K, N], C [G, M, N], row-major, at byte offsets a, b, c of this module's memory.
;;   M must be a multiple of 4 and N a multiple of 8 (the caller pads with zeros); K >= 1.
;;
;; Each 4×8 block of C lives in eight v128 accumulators while k runs over K: per k, two vector loads of a row
;; of B and four broadcast elements of A, 64 flops.
(module
  (memory (export "memory") 1)
  (func (export "bmm")
    (param $a i32) (param $b i32) (param $c i32) (param $G i32) (param $M i32) (param $K i32) (param $N i32)
    (local $g i32) (local $i i32) (local $j i32) (local $k i32)
    (local $ag i32) (local $bg i32) (local $cg i32)
    (local $ap i32) (local $bp i32) (local $cp i32)
    (local $rowA i32) (local $rowB i32)
    (local $b0 v128) (local $b1 v128) (local $s v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $rowA (i32.shl (local.get $K) (i32.const 2)))
    (local.set $rowB (i32.shl (local.get $N) (i32.const 2)))
    (local.set $ag (local.get $a))
    (local.set $bg (local.get $b))
    (local.set $cg (local.get $c))
    (local.set $g (i32.const 0))
    (loop $each_g
      (local.set $i (i32.const 0))
      (loop $each_i
        (local.set $j (i32.const 0))
        (loop $each_j
          (local.set $c00 (v128.const i32x4 0 0 0 0))
          (local.set $c01 (v128.const i32x4 0 0 0 0))
          (local.set $c10 (v128.const i32x4 0 0 0 0))
          (local.set $c11 (v128.const i32x4 0 0 0 0))
          (local.set $c20 (v128.const i32x4 0 0 0 0))
          (local.set $c21 (v128.const i32x4 0 0 0 0))
          (local.set $c30 (v128.const i32x4 0 0 0 0))
          (local.set $c31 (v128.const i32x4 0 0 0 0))
          ;; ap = &A[g, i, 0]; bp = &B[g, 0, j]
          (local.set $ap (i32.add (local.get $ag) (i32.mul (local.get $i) (local.get $rowA))))
          (local.set $bp (i32.add (local.get $bg) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $k (i32.const 0))
          (loop $each_k
            (local.set $b0 (v128.load (local.get $bp)))
            (local.set $b1 (v128.load offset=16 (local.get $bp)))
            (local.set $s (f32x4.splat (f32.load (local.get $ap))))
            (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
            (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $b1))))
            (local.set $s (f32x4.splat (f32.load (i32.add (local.get $ap) (local.get $rowA)))))
            (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $b0))))
            (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (local.get $b1))))
            (local.set $s (f32x4.splat (f32.load (i32.add (local.get $ap) (i32.shl (local.get $rowA) (i32.const 1))))))
            (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $b0))))
            (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $s) (local.get $b1))))
            (local.set $s (f32x4.splat (f32.load (i32.add (local.get $ap) (i32.mul (local.get $rowA) (i32.const 3))))))
            (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $b0))))
            (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $s) (local.get $b1))))
            (local.set $ap (i32.add (local.get $ap) (i32.const 4)))
            (local.set $bp (i32.add (local.get $bp) (local.get $rowB)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br_if $each_k (i32.lt_u (local.get $k) (local.get $K))))
          ;; cp = &C[g, i, j]
          (local.set $cp (i32.add (local.get $cg) (i32.add (i32.mul (local.get $i) (local.get $rowB)) (i32.shl (local.get $j) (i32.const 2)))))
          (v128.store (local.get $cp) (local.get $c00))
          (v128.store offset=16 (local.get $cp) (local.get $c01))
          (local.set $cp (i32.add (local.get $cp) (local.get $rowB)))
          (v128.store (local.get $cp) (local.get $c10))
          (v128.store offset=16 (local.get $cp) (local.get $c11))
          (local.set $cp (i32.add (local.get $cp) (local.get $rowB)))
          (v128.store (local.get $cp) (local.get $c20))
          (v128.store offset=16 (local.get $cp) (local.get $c21))
          (local.set $cp (i32.add (local.get $cp) (local.get $rowB)))
          (v128.store (local.get $cp) (local.get $c30))
          (v128.store offset=16 (local.get $cp) (local.get $c31))
          (local.set $j (i32.add (local.get $j) (i32.const 8)))
          (br_if $each_j (i32.lt_u (local.get $j) (local.get $N))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br_if $each_i (i32.lt_u (local.get $i) (local.get $M))))
      (local.set $ag (i32.add (local.get $ag) (i32.mul (local.get $M) (local.get $rowA))))
      (local.set $bg (i32.add (local.get $bg) (i32.mul (local.get $K) (local.get $rowB))))
      (local.set $cg (i32.add (local.get $cg) (i32.mul (local.get $M) (local.get $rowB))))
      (local.set $g (i32.add (local.get $g) (i32.const 1)))
      (br_if $each_g (i32.lt_u (local.get $g) (local.get $G))))))
