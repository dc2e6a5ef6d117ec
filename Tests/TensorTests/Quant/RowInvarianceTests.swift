import XCTest
import Tensor
import TestSupport

/// Up to `QuantKernels.rowInvariantRows` activation rows, every row of a matmul is bitwise the
/// result of that row alone (M = 1): speculative verification at temperature 0 relies on it to
/// compute exactly what one-token decode steps compute. The independent reference here is the
/// one-row call itself (the decode kernels, which QuantizedMatmulTests holds against the plain
/// reference); a kernel that sums a row in another order when other rows are beside it differs in
/// the last bits and fails, as the lanes-are-rows tiles these kernels replaced did.
final class RowInvarianceTests: XCTestCase {
    private let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]

    func testRowsComeOutAsAlone() {
        var rng = SeededGenerator(seed: 71)
        XCTAssertGreaterThanOrEqual(QuantKernels.rowInvariantRows, 7, "speculative verification needs k + 1 ≥ 2 rows")
        // Shapes: odd group counts (int8, int5 tails; int4 unpaired group), partial superblocks,
        // model shapes; int6 only whole superblocks.
        let shapes: [WeightFormat: [(Int, Int)]] = [
            .int8: [(33, 416), (64, 896), (17, 4864)],
            .int5: [(33, 352), (40, 896), (9, 4864)],
            .int4: [(33, 352), (40, 896), (24, 1536)],
            .int6: [(33, 256), (40, 1536), (16, 8960)],
            .f32: [(33, 96), (20, 896)],
            .f16: [(33, 96), (20, 896)],
        ]
        for (format, list) in shapes.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            for (rows, cols) in list {
                let w = makeWeights(&rng, rows: rows, cols: cols, format: format)
                let maxM = QuantKernels.rowInvariantRows
                var x = rng.floats(maxM * cols, in: -2...2)
                for k in 0..<cols { x[3 * cols + k] = 0 }  // an all-zero row
                for k in 0..<cols where k % 7 == 0 { x[cols + k] *= 40 }  // an outlier-heavy row
                for path in QuantKernels.availablePaths where format.traits.isQuantized || path == QuantKernels.activePath {
                    for pool in pools {
                        let alone = (0..<maxM).map { i in product(w, Array(x[i * cols..<(i + 1) * cols]), m: 1, pool: pool, path: path) }
                        for m in 2...maxM {
                            let together = product(w, Array(x[0..<m * cols]), m: m, pool: pool, path: path)
                            for i in 0..<m where together[i * rows..<(i + 1) * rows].map(\.bitPattern) != alone[i].map(\.bitPattern) {
                                let n = (0..<rows).first { together[i * rows + $0].bitPattern != alone[i][$0].bitPattern }!
                                XCTFail(
                                    "\(format) \(rows)x\(cols) \(path) threads=\(pool.threads): row \(i) of M = \(m) differs from alone at "
                                        + "output \(n): \(together[i * rows + n]) vs \(alone[i][n])")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The grouped call (q, k, v or gate, up sharing their input) keeps the property, with the
    /// formats of a real layer side by side.
    func testGroupedMatricesComeOutAsAlone() {
        var rng = SeededGenerator(seed: 72)
        let cols = 1536
        let ws = [
            makeWeights(&rng, rows: 48, cols: cols, format: .int4), makeWeights(&rng, rows: 16, cols: cols, format: .int6),
            makeWeights(&rng, rows: 16, cols: cols, format: .int8), makeWeights(&rng, rows: 24, cols: cols, format: .int5),
        ]
        let maxM = QuantKernels.rowInvariantRows
        let x = rng.floats(maxM * cols, in: -2...2)
        let pool = pools[1]
        func grouped(_ rowsX: [Float], m: Int) -> [[Float]] {
            var ys = ws.map { [Float](repeating: .nan, count: m * $0.rows) }
            rowsX.withUnsafeBufferPointer { xp in
                let pointers = ys.indices.map { i in UnsafeMutablePointer<Float>.allocate(capacity: m * ws[i].rows) }
                defer { pointers.forEach { $0.deallocate() } }
                quantizedMatmul(ws, xp.baseAddress!, m: m, pointers, pool: pool)
                for i in ys.indices { ys[i] = Array(UnsafeBufferPointer(start: pointers[i], count: m * ws[i].rows)) }
            }
            return ys
        }
        let alone = (0..<maxM).map { i in grouped(Array(x[i * cols..<(i + 1) * cols]), m: 1) }
        for m in 2...maxM {
            let together = grouped(Array(x[0..<m * cols]), m: m)
            for (j, w) in ws.enumerated() {
                for i in 0..<m {
                    XCTAssertEqual(
                        together[j][i * w.rows..<(i + 1) * w.rows].map(\.bitPattern), alone[i][j].map(\.bitPattern),
                        "\(w.format) in a group: row \(i) of M = \(m) differs from alone")
                }
            }
        }
    }

    // MARK: helpers

    private func product(_ w: QuantizedMatrix, _ x: [Float], m: Int, pool: ThreadPool, path: QuantKernels.Path) -> [Float] {
        var y = [Float](repeating: .nan, count: m * w.rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                if w.format.traits.isQuantized {
                    quantizedMatmul(w, xp.baseAddress!, m: m, yp.baseAddress!, pool: pool, path: path)
                } else {
                    quantizedMatmul(w, xp.baseAddress!, m: m, yp.baseAddress!, pool: pool)
                }
            }
        }
        return y
    }

    /// Weights with magnitudes varying across groups and rows, some groups skewed (as
    /// QuantizedMatmulTests makes them).
    private func makeWeights(_ rng: inout SeededGenerator, rows: Int, cols: Int, format: WeightFormat) -> QuantizedMatrix {
        var w = rng.floats(rows * cols)
        for g in 0..<(rows * cols / 32) {
            let scale: Float = [0.02, 1, 0.3, 5][g % 4]
            let shift: Float = g % 5 == 0 ? 0.6 : 0
            for i in 0..<32 { w[g * 32 + i] = (w[g * 32 + i] + shift) * scale }
        }
        return w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
    }
}

extension RowInvarianceTests {
    /// The comparison above can see a change of summation order: with the GEMM kernels taking
    /// every M ≥ 2 (their lanes-are-rows order), some row of M = 8 differs from alone.
    func testComparisonSeesAnotherSummationOrder() throws {
        #if AVX2
        let saved = QuantKernels.gemmMinimumRows
        QuantKernels.gemmMinimumRows = 2
        defer { QuantKernels.gemmMinimumRows = saved }
        var rng = SeededGenerator(seed: 73)
        let x = rng.floats(8 * 896, in: -2...2)
        for format in [WeightFormat.int8, .int4] {
            let q = makeWeights(&rng, rows: 64, cols: 896, format: format)
            var alone = [Float](), together = [Float](repeating: 0, count: 8 * 64)
            for i in 0..<8 {
                var y = [Float](repeating: 0, count: 64)
                Array(x[i * 896..<(i + 1) * 896]).withUnsafeBufferPointer { quantizedMatmul(q, $0.baseAddress!, m: 1, &y, pool: pools[0]) }
                alone += y
            }
            x.withUnsafeBufferPointer { quantizedMatmul(q, $0.baseAddress!, m: 8, &together, pool: pools[0]) }
            XCTAssertNotEqual(together.map(\.bitPattern), alone.map(\.bitPattern), "\(format): the GEMM order gave bitwise the one-row results")
        }
        #else
        throw XCTSkip("built without AVX2: the portable path has no GEMM kernels with another order")
        #endif
    }
}
