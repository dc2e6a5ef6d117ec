// The int4 encoders of Int4Quantizer.swift, checked against references written here: a brute-force
// nearest level per weight, the half-step bound, and the weighted squared error computed from the
// dequantized row (not from the encoder's own bookkeeping).
import XCTest
@testable import Tensor
import TestSupport

final class Int4QuantizerTests: XCTestCase {
    /// Rows of several kinds (uniform, heavy-tailed with outliers, skewed, tiny, all-zero groups) and
    /// shapes with truncated superblocks (K % 256 != 0), row-major [rows, cols].
    private func testRows(seed: UInt64, rows: Int, cols: Int) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        var w = rng.floats(rows * cols)
        for g in 0..<(rows * cols / 32) {
            let kind = g % 6
            for i in 0..<32 {
                let u = w[g * 32 + i]
                switch kind {
                case 0: w[g * 32 + i] = 0.05 * u
                case 1: w[g * 32 + i] = 0.02 * u / max(0.02, 1 - abs(u))      // heavy tail: up to ~50x
                case 2: w[g * 32 + i] = 0.3 * (u + 0.8)                         // skewed, mostly positive
                case 3: w[g * 32 + i] = 1e-4 * u
                case 4: w[g * 32 + i] = i == 7 ? 2.5 : 0.01 * u                 // one outlier
                default: w[g * 32 + i] = g % 12 == 5 ? 0 : 0.1 * u * u * u      // zeros / cubic
                }
            }
        }
        return w
    }

    private let shapes = [(3, 32), (2, 96), (4, 288), (3, 896), (2, 1024)]

    private func encode(_ w: [Float], rows: Int, cols: Int, _ encoder: Int4Encoder) -> [UInt8] {
        let stride = WeightFormat.int4.bytesPerRow(cols: cols)
        var bytes = [UInt8](repeating: 0, count: rows * stride)
        w.withUnsafeBufferPointer { src in
            bytes.withUnsafeMutableBytes { dst in
                for r in 0..<rows {
                    quantizeInt4Row(src.baseAddress! + r * cols, cols: cols, into: dst.baseAddress! + r * stride, encoder: encoder)
                }
            }
        }
        return bytes
    }

    private func decode(_ bytes: [UInt8], rows: Int, cols: Int) -> [Float] {
        bytes.withUnsafeBytes { raw in
            QuantizedMatrix(format: .int4, rows: rows, cols: cols, data: raw.baseAddress!, owner: nil).dequantize().array
        }
    }

    /// (d·sc[j], dmin·m[j]) of group g of row r, read from the bytes.
    private func grid(_ bytes: [UInt8], cols: Int, row r: Int, group g: Int) -> (step: Float, offset: Float) {
        let stride = WeightFormat.int4.bytesPerRow(cols: cols)
        let sb = r * stride + (g / 8) * 144
        let d = Float(Float16(bitPattern: UInt16(bytes[sb]) | UInt16(bytes[sb + 1]) << 8))
        let dmin = Float(Float16(bitPattern: UInt16(bytes[sb + 2]) | UInt16(bytes[sb + 3]) << 8))
        let (sc, m) = bytes.withUnsafeBufferPointer { Int4Superblock.scaleMin($0.baseAddress! + sb + 4, g % 8) }
        return (d * Float(sc), dmin * Float(m))
    }

    /// Importance as documented (rms of the group + |x|), written independently of `int4Importance`.
    private func importance(_ w: [Float], _ k: Int) -> Float {
        let g0 = k / 32 * 32
        let rms = (w[g0..<g0 + 32].map { $0 * $0 }.reduce(0, +) / 32).squareRoot()
        return rms + abs(w[k])
    }

    /// Every encoder keeps each weight within half a step of its group (issue 2), minimizing ones
    /// included: their search only accepts grids that cover the group's range.
    func testEveryEncoderWithinHalfStep() {
        for encoder in [Int4Encoder.covering, .minimizing, .best] {
            for (n, (rows, cols)) in shapes.enumerated() {
                let w = testRows(seed: 40 + UInt64(n), rows: rows, cols: cols)
                let bytes = encode(w, rows: rows, cols: cols, encoder)
                let back = decode(bytes, rows: rows, cols: cols)
                for r in 0..<rows {
                    for g in 0..<cols / 32 {
                        let step = grid(bytes, cols: cols, row: r, group: g).step
                        for i in 0..<32 {
                            let k = r * cols + g * 32 + i
                            XCTAssertLessThanOrEqual(abs(back[k] - w[k]), 0.5 * step * (1 + 1e-5) + 1e-6 * step,
                                                     "\(encoder) \(rows)x\(cols) row \(r) group \(g) index \(i): \(w[k]) -> \(back[k]), step \(step)")
                        }
                    }
                }
            }
        }
    }

    /// Brute force: every stored code is a nearest of the 16 levels of its group's stored grid.
    func testCodesAreNearestLevels() {
        for encoder in [Int4Encoder.covering, .minimizing] {
            for (n, (rows, cols)) in shapes.enumerated() {
                let w = testRows(seed: 50 + UInt64(n), rows: rows, cols: cols)
                let bytes = encode(w, rows: rows, cols: cols, encoder)
                let back = decode(bytes, rows: rows, cols: cols)
                for r in 0..<rows {
                    for g in 0..<cols / 32 {
                        let (step, offset) = grid(bytes, cols: cols, row: r, group: g)
                        for i in 0..<32 {
                            let k = r * cols + g * 32 + i
                            let nearest = (0...15).map { abs(step * Float($0) - offset - w[k]) }.min()!
                            XCTAssertLessThanOrEqual(abs(back[k] - w[k]), nearest * (1 + 1e-5) + 1e-7 * step,
                                                     "\(encoder) \(rows)x\(cols) row \(r) group \(g) index \(i)")
                        }
                    }
                }
            }
        }
    }

    /// `.best` is never worse than covering in weighted squared error, superblock by superblock; and
    /// the minimizing encoder alone is clearly better than covering overall on Gaussian-like rows
    /// (0.73 of covering's weighted error on the default model's requantized matrices; bound 0.9
    /// here), so a broken search cannot hide behind `.best`'s fallback to covering.
    func testMinimizingBeatsCoveringInWeightedError() {
        var minimizingTotal: Float = 0, coveringTotal: Float = 0
        for (n, (rows, cols)) in shapes.enumerated() {
            var rng = SeededGenerator(seed: 60 + UInt64(n))
            // Sum of 4 uniforms: roughly Gaussian, plus the mixed rows above.
            let gaussian = (0..<rows * cols).map { _ in (rng.floats(4).reduce(0, +)) * 0.02 }
            for (w, isGaussian) in [(testRows(seed: 70 + UInt64(n), rows: rows, cols: cols), false), (gaussian, true)] {
                let cover = decode(encode(w, rows: rows, cols: cols, .covering), rows: rows, cols: cols)
                let best = decode(encode(w, rows: rows, cols: cols, .best), rows: rows, cols: cols)
                let minimizing = decode(encode(w, rows: rows, cols: cols, .minimizing), rows: rows, cols: cols)
                for r in 0..<rows {
                    for s in stride(from: 0, to: cols, by: 256) {
                        var eCover: Float = 0, eBest: Float = 0
                        for k in r * cols + s..<r * cols + min(cols, s + 256) {
                            let wt = importance(w, k)
                            eCover += wt * (cover[k] - w[k]) * (cover[k] - w[k])
                            eBest += wt * (best[k] - w[k]) * (best[k] - w[k])
                        }
                        XCTAssertLessThanOrEqual(eBest, eCover * (1 + 1e-4), "\(rows)x\(cols) row \(r) superblock at \(s)")
                    }
                }
                if isGaussian {
                    for k in w.indices {
                        let wt = importance(w, k)
                        minimizingTotal += wt * (minimizing[k] - w[k]) * (minimizing[k] - w[k])
                        coveringTotal += wt * (cover[k] - w[k]) * (cover[k] - w[k])
                    }
                }
            }
        }
        XCTAssertLessThan(minimizingTotal, 0.9 * coveringTotal, "minimizing \(minimizingTotal), covering \(coveringTotal)")
    }

    /// The default (`QuantizedMatrix.quantize`) is the covering encoder, byte for byte.
    func testDefaultIsCovering() {
        let (rows, cols) = (3, 896)
        let w = testRows(seed: 80, rows: rows, cols: cols)
        let q = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: .int4) }
        let bytes = Array(UnsafeRawBufferPointer(start: q.data, count: q.byteCount))
        XCTAssertEqual(bytes, encode(w, rows: rows, cols: cols, .covering))
    }
}
