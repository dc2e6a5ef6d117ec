import XCTest
import Tensor
import TestSupport

/// int6 (Q6_K's values): the layout against the arithmetic it stands for, and every kernel path
/// (portable, AVX2 decode / small-M tiles / GEMM where compiled) against two references: the plain
/// float product of the dequantized weights and the dequantized activation codes (computed here in
/// Double), and `quantizedMatmulReference`.
///
/// Tolerance: a kernel sums each superblock's products exactly in Int32 and scales the sum once, so
/// it differs from the Double product only by Float32 roundings: of d·sc in the dequantized weight
/// (2^-24 relative per weight), of each superblock's scaling and of the sum over B = K/256
/// superblocks. We allow |y − ref| ≤ (B + 8) · 2^-23 · Σ_k |ŵ_k|·|x̂_k| + 1e-6; a lost, doubled or
/// misplaced sub-block changes y by about Σ|ŵx̂|/(16·B), far above it.
final class Int6Tests: XCTestCase {
    /// Random codes (0...63), scales (extremes −128 and 127 included) and d, packed by the layout's
    /// `packRow`, dequantize to d·sc·(q − 32) computed here in ggml's order: (d·sc)·(q − 32).
    func testDequantizeIsDTimesScaleTimesCode() {
        var rng = SeededGenerator(seed: 61)
        for cols in [256, 768] {
            let codes = (0..<cols).map { _ in UInt8.random(in: 0...63, using: &rng) }
            var scales = (0..<cols / 16).map { _ in Int8.random(in: -128...127, using: &rng) }
            scales[0] = -128
            scales[1] = 127
            scales[2] = 0
            // Float16 values: d is stored as one (the largest, a negative, the smallest subnormal).
            let ds: [Float] = (0..<cols / 256).map { b in Float(Float16([65504, -0.0123, 5.9604645e-8][b % 3])) }
            let w = pack(codes: codes, scales: scales, ds: ds, rows: 1, cols: cols)
            var got = [Float](repeating: .nan, count: cols)
            w.dequantizeRow(0, into: &got)
            let want = (0..<cols).map { k in ds[k / 256] * Float(scales[k / 16]) * Float(Int(codes[k]) - 32) }
            XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "cols \(cols): \(mismatch(got, want) ?? "")")
        }
    }

    func testLayoutSizesAndColumns() {
        XCTAssertEqual(WeightFormat.int6.bytesPerRow(cols: 1536), 6 * 210)
        XCTAssertEqual(WeightFormat.int6.bitsPerWeight(cols: 8960), 6.5625)
        XCTAssertTrue(WeightFormat.int6.supports(cols: 256))
        XCTAssertFalse(WeightFormat.int6.supports(cols: 896), "int6 holds whole superblocks only")
        XCTAssertEqual(QuantizedActivations.scaleBlock(for: .int6), 256)
    }

    /// Every path, M in 1...9 and larger blocks (small-M tiles of 4 and their remainders, the GEMM
    /// from 9 rows with 1, 2 and 4 tiles, several K chunks, two activation blocks at M = 1040 × K =
    /// 8960), odd row counts, one and two threads.
    func testKernelsMatchFloatProduct() {
        var rng = SeededGenerator(seed: 62)
        let shapes: [(rows: Int, cols: Int, ms: [Int])] = [
            (1, 256, [1, 2, 3, 4, 5, 7, 8, 9, 16]), (7, 512, [1, 2, 4, 7, 16, 17, 64]), (33, 1536, [1, 2, 4, 7, 16, 64]),
            (31, 8960, [1, 3, 16]), (65, 256, [1, 6, 40]), (3, 8960, [1040]),
        ]
        for (rows, cols, ms) in shapes {
            let w = randomWeights(&rng, rows: rows, cols: cols)
            for threads in [1, 2] {
                for m in ms {
                    var x = rng.floats(m * cols, in: -2...2)
                    if m > 2 { for k in 0..<cols { x[2 * cols + k] = 0 } }  // an all-zero activation row
                    // A row of large outliers: one activation scale per 256 values.
                    if m > 3 { for k in stride(from: 0, to: cols, by: 97) { x[3 * cols + k] = 40 } }
                    check(w, x: x, m: m, pool: pools[threads - 1], label: "\(rows)x\(cols) M=\(m) threads=\(threads)")
                }
            }
        }
    }

    /// Weights from the float quantizer: every path agrees with the references there too, and the
    /// product stays close to the unquantized one.
    func testQuantizedFromFloat() {
        var rng = SeededGenerator(seed: 63)
        let rows = 48, cols = 1024, m = 5
        var wf = rng.floats(rows * cols)
        for g in 0..<rows * cols / 16 { for i in 0..<16 { wf[16 * g + i] *= [0.02, 1, 0.3, 5][g % 4] } }
        let w = wf.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: .int6) }
        let x = rng.floats(m * cols)
        check(w, x: x, m: m, pool: pools[1], label: "quantized from float")
        var got = [Float](repeating: 0, count: m * rows)
        x.withUnsafeBufferPointer { xp in
            got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[1]) }
        }
        let exact = naiveMatmul(x, wf, m: m, n: rows, k: cols, transposeB: true)
        var err: Float = 0, norm: Float = 0
        for i in 0..<got.count {
            err += (got[i] - exact[i]) * (got[i] - exact[i])
            norm += exact[i] * exact[i]
        }
        XCTAssertLessThan((err / norm).squareRoot(), 0.04, "int6 relative RMS error vs float product")
    }

    /// The grouped entry point with int6 beside int4 (which shares its activations), int8 and int5.
    func testGroupedMatmulWithInt6() {
        var rng = SeededGenerator(seed: 64)
        let cols = 512
        let ws = [
            randomWeights(&rng, rows: 33, cols: cols),
            [Float](rng.floats(17 * cols)).withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 17, cols: cols, format: .int4) },
            randomWeights(&rng, rows: 8, cols: cols),
            [Float](rng.floats(9 * cols)).withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 9, cols: cols, format: .int8) },
        ]
        for m in [1, 3, 16] {
            let x = rng.floats(m * cols, in: -2...2)
            let outputs = ws.map { w in UnsafeMutablePointer<Float>.allocate(capacity: m * w.rows) }
            defer { outputs.forEach { $0.deallocate() } }
            x.withUnsafeBufferPointer { quantizedMatmul(ws, $0.baseAddress!, m: m, outputs, pool: pools[1]) }
            for (i, w) in ws.enumerated() {
                var alone = [Float](repeating: .nan, count: m * w.rows)
                x.withUnsafeBufferPointer { xp in
                    alone.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[0]) }
                }
                let grouped = Array(UnsafeBufferPointer(start: outputs[i], count: m * w.rows))
                XCTAssertNil(mismatch(grouped, alone, absolute: 1e-4, relative: 1e-5), "matrix \(i) (\(w.format)) M=\(m)")
            }
        }
    }

    // MARK: helpers

    private let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]

    private func pack(codes: [UInt8], scales: [Int8], ds: [Float], rows: Int, cols: Int) -> QuantizedMatrix {
        let stride = WeightFormat.int6.bytesPerRow(cols: cols)
        let storage = QuantizedStorage(byteCount: rows * stride)
        let halves = ds.map { Float16($0).bitPattern }
        for r in 0..<rows {
            codes.withUnsafeBufferPointer { c in
                scales.withUnsafeBufferPointer { s in
                    halves.withUnsafeBufferPointer { d in
                        Int6Superblock.packRow(
                            codes: c.baseAddress! + r * cols, scales: s.baseAddress! + r * cols / 16, d: d.baseAddress! + r * cols / 256,
                            cols: cols, into: storage.bytes + r * stride)
                    }
                }
            }
        }
        return QuantizedMatrix(format: .int6, rows: rows, cols: cols, data: UnsafeRawPointer(storage.bytes), owner: storage)
    }

    /// Uniform codes, scales over the whole Int8 range (every 7th sub-block at −128 or 127), and d
    /// varying by superblock as real weights' do.
    private func randomWeights(_ rng: inout SeededGenerator, rows: Int, cols: Int) -> QuantizedMatrix {
        let codes = (0..<rows * cols).map { _ in UInt8.random(in: 0...63, using: &rng) }
        let scales = (0..<rows * cols / 16).map { s -> Int8 in s % 7 == 0 ? (s % 2 == 0 ? -128 : 127) : Int8.random(in: -128...127, using: &rng) }
        let ds = (0..<rows * cols / 256).map { b -> Float in [0.0004, 0.01, -0.003, 0.2][b % 4] * Float.random(in: 0.5...1, using: &rng) }
        return pack(codes: codes, scales: scales, ds: ds, rows: rows, cols: cols)
    }

    /// Activation codes and scales as every kernel sees them (natural order).
    private func dequantizedActivations(_ x: [Float], m: Int, cols: Int) -> [Float] {
        let bytes = QuantizedActivations.byteCount(m: m, cols: cols, layout: .natural)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        let a = QuantizedActivations(m: m, cols: cols, layout: .natural, scaleBlock: 256, buffer: buffer)
        x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, rows: 0..<m) }
        return (0..<m * cols).map { i in a.scales[(i / cols) * (cols / 32) + (i % cols) / 32] * Float(a.codes[i]) }
    }

    private func check(_ w: QuantizedMatrix, x: [Float], m: Int, pool: ThreadPool, label: String) {
        let rows = w.rows, cols = w.cols
        let wd = w.dequantize().array
        let xd = dequantizedActivations(x, m: m, cols: cols)
        var exact = [Double](repeating: 0, count: m * rows), bound = [Float](repeating: 0, count: m * rows)
        let factor = Double(cols / 256 + 8) / Double(1 << 23)
        for mi in 0..<m {
            for r in 0..<rows {
                var s = 0.0, magnitude = 0.0
                for k in 0..<cols {
                    let p = Double(wd[r * cols + k]) * Double(xd[mi * cols + k])
                    s += p
                    magnitude += abs(p)
                }
                exact[mi * rows + r] = s
                bound[mi * rows + r] = Float(factor * magnitude) + 1e-6
            }
        }
        var reference = [Float](repeating: .nan, count: m * rows)
        x.withUnsafeBufferPointer { xp in
            reference.withUnsafeMutableBufferPointer { quantizedMatmulReference(w, xp.baseAddress!, m: m, $0.baseAddress!) }
        }
        var outputs: [(String, [Float])] = [("reference", reference)]
        for path in QuantKernels.availablePaths {
            var got = [Float](repeating: .nan, count: m * rows)
            x.withUnsafeBufferPointer { xp in
                got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pool, path: path) }
            }
            outputs.append((path.rawValue, got))
        }
        for (name, got) in outputs {
            var bad: [String] = []
            for i in 0..<got.count where !(abs(Double(got[i]) - exact[i]) <= Double(bound[i])) {
                if bad.count < 4 { bad.append("[m \(i / rows), row \(i % rows)] \(got[i]) vs \(exact[i]) (bound \(bound[i]))") }
            }
            XCTAssertTrue(bad.isEmpty, "\(label) \(name): " + bad.joined(separator: ", "))
        }
    }
}
