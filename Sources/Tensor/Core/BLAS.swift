import CBLAS

// Bridge to OpenBLAS's CBLAS, row-major throughout.
// Shape letters: M = rows of activations (tokens), N = output features, K = input features.
public enum BLAS {
    /// C[M, N] = A[M, K] · Bᵀ with B stored [N, K] row-major (x · Wᵀ, the nn.Linear convention).
    /// With `accumulate` C += A · Bᵀ instead. M == 1 goes to sgemv (y = W x), M > 1 to sgemm.
    public static func matmulTransposedB(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, accumulate: Bool = false) {
        precondition(m >= 0 && n >= 0 && k >= 0, "matmul with negative size m \(m) n \(n) k \(k)")
        if m == 0 || n == 0 { return }
        let beta: Float = accumulate ? 1 : 0
        if k == 0 {
            // BLAS leaves C alone when K is 0 only for beta 1; make the empty sum explicit.
            if !accumulate { c.update(repeating: 0, count: m * n) }
            return
        }
        if m == 1 {
            // y[N] = B[N, K] · x[K]
            cblas_sgemv(CblasRowMajor, CblasNoTrans, blasInt(n), blasInt(k), 1, b, blasInt(k), a, 1, beta, c, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(m), blasInt(n), blasInt(k),
                        1, a, blasInt(k), b, blasInt(k), beta, c, blasInt(n))
        }
    }

    /// General row-major sgemm: C[M, N] = alpha · op(A) · op(B) + beta · C, where op(A) is [M, K]
    /// (A stored [M, K], or [K, M] when `transposeA`), op(B) is [K, N] (B stored [K, N], or [N, K]
    /// when `transposeB`). Leading dimensions default to the packed row lengths.
    public static func sgemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                             alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int? = nil,
                             _ b: UnsafePointer<Float>, ldb: Int? = nil,
                             beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm with negative size m \(m) n \(n) k \(k)")
        if m == 0 || n == 0 { return }
        let lda = lda ?? (transposeA ? m : k)
        let ldb = ldb ?? (transposeB ? k : n)
        let ldc = ldc ?? n
        precondition(lda >= max(1, transposeA ? m : k) && ldb >= max(1, transposeB ? k : n) && ldc >= max(1, n),
                     "sgemm leading dimensions lda \(lda) ldb \(ldb) ldc \(ldc) too small for m \(m) n \(n) k \(k)")
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    blasInt(m), blasInt(n), blasInt(k), alpha, a, blasInt(lda), b, blasInt(ldb), beta, c, blasInt(ldc))
    }

    /// The naive triple loop for C[M, N] (+)= A[M, K] · B[N, K]ᵀ, accumulated in Double: the
    /// reference the bridge is tested against.
    public static func matmulTransposedBReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, accumulate: Bool = false) {
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a[i * k + p]) * Double(b[j * k + p]) }
                c[i * n + j] = accumulate ? Float(Double(c[i * n + j]) + s) : Float(s)
            }
        }
    }

    /// Threads OpenBLAS may use inside one call (process-wide). Its workers spin after each call
    /// and would compete with our own `ThreadPool` on a 2-core box; KERNELS.md measured no gain from
    /// them at our sizes. Whoever wires the app (the CLI, the bench) should set 1 at startup unless
    /// it has measured otherwise; OPENBLAS_NUM_THREADS=1 in the environment does the same.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set {
            precondition(newValue >= 1, "BLAS thread count must be at least 1, got \(newValue)")
            openblas_set_num_threads(Int32(newValue))
        }
    }

    @inline(__always)
    static func blasInt(_ v: Int) -> blasint {
        precondition(v <= Int(blasint.max), "dimension \(v) exceeds the BLAS integer range")
        return blasint(v)
    }
}
