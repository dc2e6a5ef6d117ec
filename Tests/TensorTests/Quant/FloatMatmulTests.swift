import XCTest
import Tensor
import TestSupport

/// The float path's two methods (own, sgemm) against the exact product.
///
/// Tolerance: both methods sum K Float32 products in some order; any order is within
/// K · u · Σ_k |w_k·x_k| of the exact sum (u = 2^-24, the standard bound for recursive or blocked
/// summation), and the Double-summed product (TestSupport's `naiveMatmul`) is rounded once to
/// Float, so each output may differ from it by `summationBound(K)` · Σ_k |w_k·x_k|.
/// f16 weights are widened exactly, so the bound is the same. A wrong slice, row or stride changes
/// an output by about its whole magnitude, far above it.
final class FloatMatmulTests: XCTestCase {
    let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2), ThreadPool(threads: 3)]

    /// K products summed in any order, plus the exact sum's rounding to Float (half an ulp).
    func summationBound(_ k: Int) -> Float { Float(k + 1) * 0x1p-24 }

    func check(_ w: QuantizedMatrix, m: Int, pool: ThreadPool, rng: inout SeededGenerator, label: String) {
        let x = rng.floats(m * w.cols, in: -2...2)
        let weights = w.dequantize().array  // the stored (f16-rounded) values
        let exact = naiveMatmul(x, weights, m: m, n: w.rows, k: w.cols, transposeB: true)
        let magnitude = naiveMatmul(x.map(abs), weights.map(abs), m: m, n: w.rows, k: w.cols, transposeB: true)
        for method in FloatKernels.Method.allCases {
            var got = [Float](repeating: .nan, count: m * w.rows)  // every output must be written
            x.withUnsafeBufferPointer { xp in
                got.withUnsafeMutableBufferPointer { floatMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pool, method: method) }
            }
            let bad = got.indices.filter { !(abs(got[$0] - exact[$0]) <= summationBound(w.cols) * magnitude[$0]) }
            XCTAssertTrue(
                bad.isEmpty,
                "\(label) \(method): \(bad.count) outputs off, first y[\(bad.first ?? 0)] = \(got[bad.first ?? 0]) vs \(exact[bad.first ?? 0])"
            )
        }
    }

    func testBothMethodsOnRandomShapes() {
        var rng = SeededGenerator(seed: 31)
        for trial in 0..<40 {
            let format: WeightFormat = trial % 2 == 0 ? .f32 : .f16
            let rows = Int.random(in: 1...300, using: &rng), cols = Int.random(in: 1...700, using: &rng)
            let w = QuantizedMatrix.quantize(rng.floats(rows * cols), rows: rows, cols: cols, format: format)
            let threshold = FloatKernels.sgemmMinimumRows
            for m in [1, threshold - 1, threshold, Int.random(in: 2...80, using: &rng)] where m >= 1 {
                check(w, m: m, pool: pools[trial % 3], rng: &rng, label: "\(format) \(rows)x\(cols) M=\(m) threads=\(trial % 3 + 1)")
            }
        }
    }

    /// f16 slices capped by `f16SliceBytes` (K = 4864: 208 rows), several per thread, the last short.
    func testFloat16SlicesOfWideRows() {
        var rng = SeededGenerator(seed: 32)
        let rows = 1000, cols = 4864
        XCTAssertLessThan(FloatKernels.f16SliceBytes / (4 * cols), rows / 4, "the slice cap must apply to this shape")
        let w = QuantizedMatrix.quantize(rng.floats(rows * cols, in: -0.1...0.1), rows: rows, cols: cols, format: .f16)
        for pool in pools.prefix(2) { check(w, m: 20, pool: pool, rng: &rng, label: "f16 1000x4864 threads=\(pool.threads)") }
    }

    /// `quantizedMatmul` takes the method `FloatKernels.method` names: bit for bit its output (both
    /// methods are deterministic for a given pool: the slices do not depend on which thread claims them).
    func testDispatchFollowsTheThreshold() {
        var rng = SeededGenerator(seed: 33)
        for format in [WeightFormat.f32, .f16] {
            let w = QuantizedMatrix.quantize(rng.floats(96 * 200), rows: 96, cols: 200, format: format)
            let threshold = FloatKernels.sgemmMinimumRows
            for m in [1, threshold - 1, threshold, threshold + 7] where m >= 1 {
                let x = rng.floats(m * 200)
                var dispatched = [Float](repeating: .nan, count: m * 96), chosen = dispatched
                let method = FloatKernels.method(m: m)
                XCTAssertEqual(method, m >= threshold ? .sgemm : .own)
                x.withUnsafeBufferPointer { xp in
                    dispatched.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[1]) }
                    chosen.withUnsafeMutableBufferPointer {
                        floatMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[1], method: method)
                    }
                }
                XCTAssertEqual(dispatched, chosen, "\(format) M=\(m)")
            }
        }
    }

    /// OpenBLAS stays on the calling thread: our pool splits the work (see BLAS.threadCount).
    func testOpenBLASUsesOneThread() {
        var rng = SeededGenerator(seed: 34)
        let w = QuantizedMatrix.quantize(rng.floats(64 * 64), rows: 64, cols: 64, format: .f32)
        var y = [Float](repeating: 0, count: 32 * 64)
        let x = rng.floats(32 * 64)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { floatMatmul(w, xp.baseAddress!, m: 32, $0.baseAddress!, pool: pools[1], method: .sgemm) }
        }
        XCTAssertEqual(BLAS.threadCount, 1)
    }
}
