/// C[M, N] = A[M, K] · B, all row-major arrays, accumulated in Double: the plain triple loop that
/// matrix-multiply kernels are checked against. B is [K, N], or [N, K] (the nn.Linear / "x · Wᵀ"
/// convention) when `transposeB`.
public func naiveMatmul(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transposeB: Bool) -> [Float] {
    precondition(a.count == m * k && b.count == n * k, "naiveMatmul: A has \(a.count) (want \(m * k)), B has \(b.count) (want \(n * k))")
    var c = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                s += Double(a[i * k + p]) * Double(transposeB ? b[j * k + p] : b[p * n + j])
            }
            c[i * n + j] = Float(s)
        }
    }
    return c
}

/// The transpose of a row-major [rows, cols] matrix, as [cols, rows].
public func transposed(_ x: [Float], rows: Int, cols: Int) -> [Float] {
    precondition(x.count == rows * cols, "transposed: \(x.count) elements for \(rows)x\(cols)")
    var t = [Float](repeating: 0, count: x.count)
    for r in 0..<rows { for c in 0..<cols { t[c * rows + r] = x[r * cols + c] } }
    return t
}
