import CLAPACKE

/// Failures of the LAPACK bridge, saying what was expected and what was found.
public enum LinearAlgebraError: Error, CustomStringConvertible, Equatable {
    case shapeMismatch(operation: String, expected: String, found: [Int])
    /// The leading minor of this order (1-based) is not positive: the matrix is not symmetric
    /// positive definite (or is too badly conditioned for Float).
    case notPositiveDefinite(order: Int, size: Int)
    /// Diagonal element `index` (1-based) of a triangular matrix is exactly zero.
    case singular(index: Int, size: Int)
    case lapack(routine: String, info: Int)

    public var description: String {
        switch self {
        case let .shapeMismatch(operation, expected, found):
            return "\(operation): expected \(expected), found shape \(found)"
        case let .notPositiveDefinite(order, size):
            return "cholesky: expected a symmetric positive definite \(size)x\(size) matrix, but its leading minor of order \(order) is not positive definite"
        case let .singular(index, size):
            return "solveTriangular: expected a non-singular \(size)x\(size) triangular matrix, found a zero on the diagonal at row \(index)"
        case let .lapack(routine, info):
            return "\(routine) failed with info \(info)"
        }
    }
}

extension Tensor {
    /// The lower Cholesky factor L of this symmetric positive definite [N, N] matrix (A = L Lᵀ),
    /// as a new owned tensor with zeros above the diagonal. Only the lower triangle of `self` is
    /// read. LAPACKE_spotrf; throws `notPositiveDefinite` when A is not SPD.
    public func cholesky() throws -> Tensor {
        guard shape.count == 2, shape[0] == shape[1] else {
            throw LinearAlgebraError.shapeMismatch(operation: "cholesky", expected: "a square [N, N] matrix", found: shape)
        }
        let n = shape[0]
        let l = copy()
        if n == 0 { return l }
        let info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int32(n), l.pointer, Int32(n))
        if info > 0 { throw LinearAlgebraError.notPositiveDefinite(order: Int(info), size: n) }
        if info < 0 { throw LinearAlgebraError.lapack(routine: "LAPACKE_spotrf", info: Int(info)) }
        let p = l.pointer
        for i in 0..<n { for j in (i + 1)..<n { p[i * n + j] = 0 } }
        return l
    }

    /// Solves op(T) X = B for X, where T = self is [N, N] triangular (lower or upper triangle read,
    /// per `lower`), op(T) = Tᵀ when `transpose`, and B is [N] or [N, R]. Returns X with B's shape
    /// (a new owned tensor). LAPACKE_strtrs; throws `singular` on a zero diagonal element.
    public func solveTriangular(_ b: Tensor, lower: Bool, transpose: Bool) throws -> Tensor {
        guard shape.count == 2, shape[0] == shape[1] else {
            throw LinearAlgebraError.shapeMismatch(operation: "solveTriangular", expected: "a square [N, N] triangular matrix", found: shape)
        }
        let n = shape[0]
        guard (b.shape.count == 1 || b.shape.count == 2), b.shape[0] == n else {
            throw LinearAlgebraError.shapeMismatch(operation: "solveTriangular", expected: "right-hand side [\(n)] or [\(n), R]", found: b.shape)
        }
        let nrhs = b.shape.count == 2 ? b.shape[1] : 1
        let t = copy()
        let x = b.copy()
        if n == 0 || nrhs == 0 { return x }
        let info = LAPACKE_strtrs(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: lower ? "L" : "U")),
                                  Int8(UInt8(ascii: transpose ? "T" : "N")), Int8(UInt8(ascii: "N")),
                                  Int32(n), Int32(nrhs), t.pointer, Int32(n), x.pointer, Int32(nrhs))
        if info > 0 { throw LinearAlgebraError.singular(index: Int(info), size: n) }
        if info < 0 { throw LinearAlgebraError.lapack(routine: "LAPACKE_strtrs", info: Int(info)) }
        return x
    }
}
