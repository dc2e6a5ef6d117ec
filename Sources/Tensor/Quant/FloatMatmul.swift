// Float-weight matrix multiply: y = x · Wᵀ for f32 and f16 weights, no activation quantization.
// Shape letters: M activation rows (tokens), N = w.rows output features, K = w.cols input features.
// x [M, K] Float32, y [M, N] Float32, W [N, K] f32 or f16 (row-major, as the weight file stores it).
//
// Two methods, threads over N for both:
//   own   — each weight row widened once (f16) and dotted with all M activation rows, 16-lane FMA.
//           Reads every weight once, so it is what decode (M = 1) and small batches want; it is also
//           the structure of the reference (`quantizedMatmulReference`).
//   sgemm — OpenBLAS's cblas_sgemm on contiguous slices of N, one call per claimed slice, from
//           `FloatKernels.sgemmMinimumRows` rows on (prefill, larger batches): the own path re-reads
//           all of x for every weight row and does one dot at a time, sgemm blocks for the caches and
//           keeps many accumulators in registers. OpenBLAS runs on the calling thread (BLAS.swift
//           sets it to one thread): our pool already occupies the cores.
// f16 weights reach sgemm widened per call, a slice at a time into a scratch of at most
// `FloatKernels.f16SliceBytes`; each slice's sgemm reads x again, which the slice size bounds.

/// Which float method runs: sgemm from `sgemmMinimumRows` activation rows on, the own path below.
public enum FloatKernels {
    public enum Method: String, Sendable, CaseIterable {
        case own, sgemm
    }

    /// Activation rows from which f32 and f16 weights go through sgemm: where `bench kernels`' float
    /// section (one layer of the default model, 1 and 2 threads) found sgemm ahead, f16's per-call
    /// widening included (figures in the commit that set it).
    public static let sgemmMinimumRows = 8

    /// Largest widened f16 slice (bytes of Float32): big enough that x is re-read only a few times
    /// per call (K = 4864: 208 rows per slice), small enough to stay in the L3 cache.
    public static let f16SliceBytes = 4 << 20

    /// The method `quantizedMatmul` uses for `m` activation rows.
    public static func method(m: Int) -> Method { m >= sgemmMinimumRows ? .sgemm : .own }
}

/// y [M, N] = x [M, K] · Wᵀ for f32/f16 weights with the method chosen by `FloatKernels.method`.
func floatMatmul(_ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    floatMatmul(w, x, m: m, y, pool: pool, method: FloatKernels.method(m: m))
}

/// As above with an explicit method (tests compare them, `bench kernels` times them).
public func floatMatmul(
    _ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>,
    pool: ThreadPool, method: FloatKernels.Method
) {
    precondition(!w.format.traits.isQuantized, "floatMatmul takes f32/f16 weights, got \(w.format)")
    precondition(m >= 1, "floatMatmul needs at least one activation row, got m = \(m)")
    switch method {
    case .own: ownFloatMatmul(w, x, m: m, y, pool: pool)
    case .sgemm: sgemmFloatMatmul(w, x, m: m, y, pool: pool)
    }
}

/// The own method: threads claim chunks of weight rows (a multiple of 8, about 8 per thread).
func ownFloatMatmul(_ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let cols = w.cols
    pool.dynamicFor(w.rows, grain: max(8, (w.rows / (pool.threads * 8) + 7) / 8 * 8)) { _, rows in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { buffer in
            let widened = buffer.baseAddress!
            for n in rows {
                let rowFloats: UnsafePointer<Float>
                if w.format == .f32 {
                    rowFloats = w.rowPointer(n).assumingMemoryBound(to: Float.self)
                } else {
                    convertFloat16ToFloat(w.rowPointer(n).assumingMemoryBound(to: UInt16.self), widened, count: cols)
                    rowFloats = UnsafePointer(widened)
                }
                for mi in 0..<m {
                    y[mi * w.rows + n] = floatDot(rowFloats, x + mi * cols, count: cols)
                }
            }
        }
    }
}

/// The sgemm method: slices of N (two per thread for f32, so a descheduled thread holds up at most
/// half its share; f16 slices also capped at `f16SliceBytes` widened), each y[:, slice] =
/// x · W[slice]ᵀ in one sgemm writing into y with row stride N.
func sgemmFloatMatmul(_ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let n = w.rows, k = w.cols
    var slice = ((n + 2 * pool.threads - 1) / (2 * pool.threads) + 15) / 16 * 16
    if w.format == .f16 { slice = min(slice, max(16, FloatKernels.f16SliceBytes / (4 * k) / 16 * 16)) }
    pool.dynamicFor(n, grain: slice) { _, rows in
        if w.format == .f32 {
            BLAS.matmulTransposedB(
                x, w.rowPointer(rows.lowerBound).assumingMemoryBound(to: Float.self), y + rows.lowerBound,
                m: m, n: rows.count, k: k, ldc: n)
        } else {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rows.count * k) { buffer in
                convertFloat16ToFloat(
                    w.rowPointer(rows.lowerBound).assumingMemoryBound(to: UInt16.self), buffer.baseAddress!,
                    count: rows.count * k)
                BLAS.matmulTransposedB(x, buffer.baseAddress!, y + rows.lowerBound, m: m, n: rows.count, k: k, ldc: n)
            }
        }
    }
}

/// Σ a[i]·b[i] with 16-lane FMA accumulators (`SIMD16<Float>.addProduct` lowers to vfmadd).
@inline(__always)
func floatDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var acc0 = SIMD16<Float>(), acc1 = SIMD16<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 32 <= count {
        acc0.addProduct(
            ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self),
            rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self))
        acc1.addProduct(
            ra.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self),
            rb.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self))
        i += 32
    }
    var s = (acc0 + acc1).sum()
    while i < count {
        s += a[i] * b[i]
        i += 1
    }
    return s
}
