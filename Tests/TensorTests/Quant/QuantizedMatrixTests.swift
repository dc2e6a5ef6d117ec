import XCTest
import Tensor
import TestSupport

final class QuantizedMatrixTests: XCTestCase {
    /// Scale bytes of a Q4_K superblock for sc = [1, 2, 3, 63, 10, 17, 33, 48] and
    /// m = [0, 5, 63, 1, 16, 31, 32, 7], packed by hand with ggml's rules (CONTRACT.md):
    /// j < 4: s[j] low 6 bits = sc, s[j+4] low 6 bits = m; j >= 4: s[j+4] = sc & 15 | (m & 15) << 4,
    /// top 2 bits of s[j-4] = sc >> 4, top 2 bits of s[j] = m >> 4.
    static let handScales: [UInt8] = [1, 66, 131, 255, 64, 69, 191, 1, 10, 241, 1, 112]
    static let sc: [Float] = [1, 2, 3, 63, 10, 17, 33, 48]
    static let mins: [Float] = [0, 5, 63, 1, 16, 31, 32, 7]

    func testInt4ScaleMinUnpacksHandPackedBytes() {
        Self.handScales.withUnsafeBufferPointer { s in
            for j in 0..<8 {
                let (sc, m) = Int4Superblock.scaleMin(s.baseAddress!, j)
                XCTAssertEqual(Float(sc), Self.sc[j], "scale of group \(j)")
                XCTAssertEqual(Float(m), Self.mins[j], "min of group \(j)")
            }
        }
        var packed = [UInt8](repeating: 0xAA, count: 12)
        packed.withUnsafeMutableBufferPointer {
            Int4Superblock.packScaleMin(scales: Self.sc.map { UInt8($0) }, mins: Self.mins.map { UInt8($0) }, into: $0.baseAddress!)
        }
        XCTAssertEqual(packed, Self.handScales)
    }

    /// A hand-built superblock: d = 0.5 (Float16 0x3800), dmin = 0.25 (0x3400); group j, byte i holds
    /// q = (i + j) % 16 in its low nibble (weight i) and (15 − i + 2j) % 16 in its high nibble
    /// (weight i + 16). Expected weight = 0.5·sc[j]·q − 0.25·m[j].
    func testInt4DequantizeHandBuiltSuperblock() {
        var bytes = [UInt8](repeating: 0, count: 144)
        bytes[0] = 0x00; bytes[1] = 0x38  // d = 0.5, little-endian
        bytes[2] = 0x00; bytes[3] = 0x34  // dmin = 0.25
        for k in 0..<12 { bytes[4 + k] = Self.handScales[k] }
        var expected = [Float](repeating: 0, count: 256)
        for j in 0..<8 {
            for i in 0..<16 {
                let low = (i + j) % 16, high = (15 - i + 2 * j) % 16
                bytes[16 + 16 * j + i] = UInt8(low | high << 4)
                expected[32 * j + i] = 0.5 * Self.sc[j] * Float(low) - 0.25 * Self.mins[j]
                expected[32 * j + i + 16] = 0.5 * Self.sc[j] * Float(high) - 0.25 * Self.mins[j]
            }
        }
        let out = bytes.withUnsafeBytes { raw -> [Float] in
            let matrix = QuantizedMatrix(format: .int4, rows: 1, cols: 256, data: raw.baseAddress!, owner: nil)
            var row = [Float](repeating: .nan, count: 256)
            row.withUnsafeMutableBufferPointer { matrix.dequantizeRow(0, into: $0.baseAddress!) }
            return row
        }
        XCTAssertNil(mismatch(out, expected))  // exact: all values are small dyadic rationals
    }

    /// A hand-built int5 superblock, bytes written from the layout's definition (WeightFormat.swift):
    /// d[j] = 0.5·(j + 1) (Float16 0x3800, 0x3C00, 0x3E00, 0x4000, 0x4100, 0x4200, 0x4300, 0x4400);
    /// nibble chunk p byte i (< 16) = 5 | 9 << 4, byte 16 + i = 3 | 12 << 4 (group 2p weights i and
    /// i + 16 get nibbles 5 and 9, group 2p + 1 gets 3 and 12); qh byte b = 0b0000_0101 for b < 16
    /// (vectors 0 and 2: the fifth bit of group 0's and group 2's weights 0..<16), qh byte 16 =
    /// 0b1000_0000 (vector 7, byte 16: group 7, weight 16). Expected w = d[j]·(q − 16).
    func testInt5DequantizeHandBuiltSuperblock() {
        var bytes = [UInt8](repeating: 0, count: 176)
        let halves: [UInt16] = [0x3800, 0x3C00, 0x3E00, 0x4000, 0x4100, 0x4200, 0x4300, 0x4400]
        for j in 0..<8 { bytes[2 * j] = UInt8(halves[j] & 0xFF); bytes[2 * j + 1] = UInt8(halves[j] >> 8) }
        for b in 0..<16 { bytes[16 + b] = 0b0000_0101 }
        bytes[16 + 16] = 0b1000_0000
        for p in 0..<4 {
            for i in 0..<16 {
                bytes[48 + 32 * p + i] = 5 | 9 << 4
                bytes[48 + 32 * p + 16 + i] = 3 | 12 << 4
            }
        }
        var expected = [Float](repeating: 0, count: 256)
        for j in 0..<8 {
            let d = 0.5 * Float(j + 1)
            for i in 0..<32 {
                var q = j % 2 == 0 ? (i < 16 ? 5 : 9) : (i < 16 ? 3 : 12)
                if (j == 0 || j == 2) && i < 16 { q += 16 }
                if j == 7 && i == 16 { q += 16 }
                expected[32 * j + i] = d * Float(q - 16)
            }
        }
        let out = bytes.withUnsafeMutableBytes { raw -> [Float] in
            QuantizedMatrix(format: .int5, rows: 1, cols: 256, data: UnsafeRawPointer(raw.baseAddress!), owner: nil).dequantize().array
        }
        XCTAssertNil(mismatch(out, expected))
    }

    /// A hand-built int8 block: scale 0.25 (Float16 0x3400), q[i] = i − 16.
    func testInt8DequantizeHandBuiltBlock() {
        var bytes: [UInt8] = [0x00, 0x34] + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        let out = bytes.withUnsafeMutableBytes { raw -> [Float] in
            let matrix = QuantizedMatrix(format: .int8, rows: 1, cols: 32, data: UnsafeRawPointer(raw.baseAddress!), owner: nil)
            return matrix.dequantize().array
        }
        XCTAssertNil(mismatch(out, (0..<32).map { 0.25 * Float($0 - 16) }))
    }

    /// Round trip: every weight within half a quantization step of its group (step = the int8 block
    /// scale, or d·sc[j] for int4), plus Float32 rounding slack of 1e-6 relative to the step.
    func testRoundTripWithinHalfStep() {
        var rng = SeededGenerator(seed: 11)
        for format in [WeightFormat.int8, .int5, .int4] {
            for (rows, cols) in [(3, 32), (5, 96), (4, 288), (7, 896), (2, 4864)] {
                // Mix of scales per group so superblock scales and six-bit sub-scales get exercised.
                var w = rng.floats(rows * cols)
                for g in 0..<(rows * cols / 32) {
                    let scale = Float([0.001, 0.1, 1, 30][g % 4]) * (g % 7 == 0 ? 0 : 1) + (g % 7 == 0 ? 0.5 : 0)
                    let shift: Float = g % 3 == 0 ? 0.7 : 0  // skewed groups (all positive-ish)
                    for i in 0..<32 { w[g * 32 + i] = (w[g * 32 + i] + shift) * scale }
                }
                let q = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
                let back = q.dequantize().array
                var worst: Float = 0
                for r in 0..<rows {
                    for g in 0..<cols / 32 {
                        let step = stepOf(q, row: r, group: g)
                        for i in 0..<32 {
                            let k = r * cols + g * 32 + i
                            let err = abs(back[k] - w[k])
                            worst = max(worst, err / max(step, 1e-30))
                            XCTAssertLessThanOrEqual(
                                err, 0.5 * step * (1 + 1e-5) + 1e-6 * step,
                                "\(format) \(rows)x\(cols) row \(r) group \(g) index \(i): \(w[k]) -> \(back[k]), step \(step)")
                        }
                    }
                }
            }
        }
    }

    func testFloatFormatsRoundTrip() {
        var rng = SeededGenerator(seed: 12)
        let w = rng.floats(3 * 40, in: -100...100)
        let f32 = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 3, cols: 40, format: .f32) }
        XCTAssertEqual(f32.dequantize().array, w)
        let f16 = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 3, cols: 40, format: .f16) }
        // Float16 keeps 11 significant bits: relative error ≤ 2^-11.
        XCTAssertNil(mismatch(f16.dequantize().array, w, relative: 1.0 / 2048))
    }

    func testBorrowedMatrixReadsInPlace() {
        var rng = SeededGenerator(seed: 13)
        let w = rng.floats(2 * 64)
        let owned = w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 2, cols: 64, format: .int8) }
        let borrowed = QuantizedMatrix(format: .int8, rows: 2, cols: 64, data: owned.data, owner: owned.owner)
        XCTAssertEqual(borrowed.dequantize().array, owned.dequantize().array)
        XCTAssertEqual(borrowed.byteCount, 2 * 68)
    }

    /// The quantization step of one group, read from the stored bytes.
    private func stepOf(_ q: QuantizedMatrix, row: Int, group g: Int) -> Float {
        let base = q.rowPointer(row)
        switch q.format {
        case .int8:
            return Float(Float16(bitPattern: (base + g * 34).loadUnaligned(as: UInt16.self)))
        case .int5:
            return Float(Float16(bitPattern: (base + (g / 8) * 176 + 2 * (g % 8)).loadUnaligned(as: UInt16.self)))
        case .int4:
            let sb = base + (g / 8) * 144
            let d = Float(Float16(bitPattern: sb.loadUnaligned(as: UInt16.self)))
            let (sc, _) = Int4Superblock.scaleMin((sb + 4).assumingMemoryBound(to: UInt8.self), g % 8)
            return d * Float(sc)
        default:
            return 0
        }
    }
}
