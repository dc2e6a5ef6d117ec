import CBLAS

// Bridge to OpenBLAS's CBLAS, row-major: the sgemm of the float matmul path (FloatMatmul.swift).
// Shape letters: M = rows of activations (tokens), N = output features, K = input features.
public enum BLAS {
    /// C[M, N] = A[M, K] · Bᵀ with B stored [N, K] row-major (x · Wᵀ, the nn.Linear convention),
    /// C's rows `ldc` floats apart (default N; more when C is a column slice of a wider output).
    /// Runs on the calling thread (see `threadCount`).
    public static func matmulTransposedB(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        m: Int, n: Int, k: Int, ldc: Int? = nil
    ) {
        let ldc = ldc ?? n
        precondition(m >= 1 && n >= 1 && k >= 1 && ldc >= n, "sgemm shapes m \(m) n \(n) k \(k) ldc \(ldc)")
        _ = callerThreadOnly
        cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(m), blasInt(n), blasInt(k),
            1, a, blasInt(k), b, blasInt(k), 0, c, blasInt(ldc))
    }

    /// Threads OpenBLAS may use inside one call (process-wide). The bridge sets 1 before its first
    /// call: the float path splits N over our own `ThreadPool` and calls sgemm from each pool
    /// thread, and OpenBLAS's workers would spin beside the pool's on a 2-core box (KERNELS.md
    /// measured no gain from them at our sizes). Settable so that `bench kernels` can time one call
    /// on OpenBLAS's own threads against the split; set it back to 1 afterwards.
    public static var threadCount: Int {
        get {
            _ = callerThreadOnly
            return Int(openblas_get_num_threads())
        }
        set {
            _ = callerThreadOnly
            precondition(newValue >= 1, "BLAS thread count must be at least 1, got \(newValue)")
            openblas_set_num_threads(Int32(newValue))
        }
    }

    /// Evaluated once (a global's lazy initializer is thread-safe), before any use of OpenBLAS.
    private static let callerThreadOnly: Void = openblas_set_num_threads(1)

    @inline(__always)
    static func blasInt(_ v: Int) -> blasint {
        precondition(v <= Int(blasint.max), "dimension \(v) exceeds the BLAS integer range")
        return blasint(v)
    }
}
