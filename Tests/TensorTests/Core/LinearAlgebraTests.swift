import XCTest
import Tensor
import TestSupport

final class LAPACKTests: XCTestCase {
    let spd: [Float] = [4, 12, -16, 12, 37, -43, -16, -43, 98]

    func testCholeskyHandExample() throws {
        let l = try Tensor(shape: [3, 3], values: spd).cholesky()
        XCTAssertEqual(l.shape, [3, 3])
        XCTAssertNil(mismatch(l.array, [2, 0, 0, 6, 1, 0, -8, 5, 3], absolute: 1e-5))
    }

    func testCholeskyOfRandomSPDReconstructs() throws {
        var rng = SeededGenerator(seed: 22)
        for n in [1, 3, 33, 96] {
            let g = rng.floats(n * n)
            var a = naiveMatmul(g, g, m: n, n: n, k: n, transposeB: true)   // G Gᵀ, then + n I
            for i in 0..<n { a[i * n + i] += Float(n) }
            let l = try Tensor(shape: [n, n], values: a).cholesky().array
            for i in 0..<n { for j in (i + 1)..<n { XCTAssertEqual(l[i * n + j], 0) } }
            XCTAssertNil(mismatch(naiveMatmul(l, l, m: n, n: n, k: n, transposeB: true), a, absolute: 1e-4, relative: 1e-5), "n \(n)")
        }
    }

    func testNonSPDThrows() {
        // Eigenvalues 3 and -1: the second leading minor (1 - 4 = -3) is negative.
        XCTAssertThrowsError(try Tensor(shape: [2, 2], values: [1, 2, 2, 1]).cholesky()) { error in
            XCTAssertEqual(error as? LinearAlgebraError, .notPositiveDefinite(order: 2, size: 2))
            XCTAssertTrue("\(error)".contains("positive definite"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor(shape: [1, 1], values: [-1]).cholesky())
        XCTAssertThrowsError(try Tensor(shape: [2, 3], values: [1, 0, 0, 0, 1, 0]).cholesky()) { error in
            XCTAssertTrue("\(error)".contains("expected a square"), "\(error)")
        }
    }

    func testTriangularSolveMultipliesBack() throws {
        let lower = Tensor(shape: [3, 3], values: [2, 0, 0, 6, 1, 0, -8, 5, 3])
        let upper = Tensor(shape: [3, 3], values: transposed(lower.array, rows: 3, cols: 3))
        var rng = SeededGenerator(seed: 23)
        let b = Tensor(shape: [3, 2], values: rng.floats(6))
        // L X = B
        let x1 = try lower.solveTriangular(b, lower: true, transpose: false)
        XCTAssertNil(mismatch(naiveMatmul(lower.array, x1.array, m: 3, n: 2, k: 3, transposeB: false), b.array, absolute: 1e-5))
        // Lᵀ X = B
        let x2 = try lower.solveTriangular(b, lower: true, transpose: true)
        XCTAssertNil(mismatch(naiveMatmul(upper.array, x2.array, m: 3, n: 2, k: 3, transposeB: false), b.array, absolute: 1e-5))
        // U X = B with U = Lᵀ gives the same X as the transposed lower solve
        let x3 = try upper.solveTriangular(b, lower: false, transpose: false)
        XCTAssertNil(mismatch(x3.array, x2.array, absolute: 1e-5))
        // vector right-hand side keeps its shape; hand check: L x = [2, 7, 0] -> x = [1, 1, 1]
        let v = try lower.solveTriangular(Tensor(shape: [3], values: [2, 7, 0]), lower: true, transpose: false)
        XCTAssertEqual(v.shape, [3])
        XCTAssertNil(mismatch(v.array, [1, 1, 1], absolute: 1e-6))
        // A x = b through the Cholesky factor: L y = b, Lᵀ x = y.
        let a = Tensor(shape: [3, 3], values: spd)
        let l = try a.cholesky()
        let rhs = Tensor(shape: [3], values: [1, 2, 3])
        let x = try l.solveTriangular(try l.solveTriangular(rhs, lower: true, transpose: false), lower: true, transpose: true)
        XCTAssertNil(mismatch(naiveMatmul(spd, x.array, m: 3, n: 1, k: 3, transposeB: false), [1, 2, 3], absolute: 1e-3))
    }

    func testTriangularSolveErrors() {
        let singular = Tensor(shape: [2, 2], values: [1, 0, 3, 0])
        XCTAssertThrowsError(try singular.solveTriangular(Tensor(shape: [2], values: [1, 1]), lower: true, transpose: false)) { error in
            XCTAssertEqual(error as? LinearAlgebraError, .singular(index: 2, size: 2))
        }
        XCTAssertThrowsError(try Tensor(zeros: [3, 3]).solveTriangular(Tensor(zeros: [2]), lower: true, transpose: false)) { error in
            XCTAssertTrue("\(error)".contains("right-hand side [3]"), "\(error)")
        }
    }
}
