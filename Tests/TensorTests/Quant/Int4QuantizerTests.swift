// The int4 encoder of Int4Quantizer.swift, checked against references written here: a brute-force
// nearest level per weight and the half-step bound, both from the dequantized row and the grid read
// back from the bytes (not from the encoder's own bookkeeping).
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
                case 1: w[g * 32 + i] = 0.02 * u / max(0.02, 1 - abs(u))  // heavy tail: up to ~50x
                case 2: w[g * 32 + i] = 0.3 * (u + 0.8)  // skewed, mostly positive
                case 3: w[g * 32 + i] = 1e-4 * u
                case 4: w[g * 32 + i] = i == 7 ? 2.5 : 0.01 * u  // one outlier
                default: w[g * 32 + i] = g % 12 == 5 ? 0 : 0.1 * u * u * u  // zeros / cubic
                }
            }
        }
        return w
    }

    private let shapes = [(3, 32), (2, 96), (4, 288), (3, 896), (2, 1024)]

    private func encode(_ w: [Float], rows: Int, cols: Int) -> [UInt8] {
        let q = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: .int4) }
        return Array(UnsafeRawBufferPointer(start: q.data, count: q.byteCount))
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

    /// Every weight is within half a step of its group's grid, and every stored code is a
    /// nearest of the 16 levels of that grid (brute force over the levels).
    func testCodesAreNearestLevelsWithinHalfStep() {
        for (n, (rows, cols)) in shapes.enumerated() {
            let w = testRows(seed: 40 + UInt64(n), rows: rows, cols: cols)
            let bytes = encode(w, rows: rows, cols: cols)
            let back = decode(bytes, rows: rows, cols: cols)
            for r in 0..<rows {
                for g in 0..<cols / 32 {
                    let (step, offset) = grid(bytes, cols: cols, row: r, group: g)
                    for i in 0..<32 {
                        let k = r * cols + g * 32 + i
                        let error = abs(back[k] - w[k])
                        let label = "\(rows)x\(cols) row \(r) group \(g) index \(i): \(w[k]) -> \(back[k]), step \(step)"
                        XCTAssertLessThanOrEqual(error, 0.5 * step * (1 + 1e-5) + 1e-6 * step, label)
                        let nearest = (0...15).map { abs(step * Float($0) - offset - w[k]) }.min()!
                        XCTAssertLessThanOrEqual(error, nearest * (1 + 1e-5) + 1e-7 * step, label)
                    }
                }
            }
        }
    }
}
