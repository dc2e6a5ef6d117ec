import Foundation
import XCTest
import Tensor
import TestSupport
import ModelImport

/// Repacked int8/int5/int4/int6 matrices dequantize (through Tensor's QuantizedMatrix) to exactly the GGUF
/// dequantization, for random blocks and for the real model's tensors.
final class RepackTests: XCTestCase {
    /// Random but valid blocks of `type`: random bytes with finite, modest Float16 scales.
    func randomBlocks(_ type: GGMLType, count: Int, generator: inout SeededGenerator) -> [UInt8] {
        let size = type.traits!.bytesPerBlock
        var out: [UInt8] = []
        for _ in 0..<count {
            var block = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            func setHalf(_ offset: Int) {
                let h = halfBits(Float.random(in: -0.05...0.05, using: &generator))
                block[offset] = h[0]; block[offset + 1] = h[1]
            }
            switch type {
            case .Q8_0, .Q4_0, .Q5_0: setHalf(0)
            case .Q4_K: setHalf(0); setHalf(2)
            case .Q6_K: setHalf(208)
            default: break
            }
            out += block
        }
        return out
    }

    /// Converts `rows × cols` of `type` into `format` through the converter's own path, then compares
    /// Tensor's dequantization with the GGUF dequantization bit for bit.
    func checkExact(
        _ type: GGMLType, bytes: [UInt8], rows: Int, cols: Int, format: WeightFormat, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let owner = NSObject()  // keep-alive object for the SourceTensor (the bytes outlive the call)
        try bytes.withUnsafeBytes { raw in
            let t = SourceTensor(name: "w", type: type, rows: rows, cols: cols, isVector: false, data: raw.baseAddress!, owner: owner)
            let q = try repacked(t, format: format)
            var a = [Float](repeating: 0, count: cols), b = [Float](repeating: 0, count: cols)
            for r in 0..<rows {
                t.dequantizeRow(r, into: &a)
                q.dequantizeRow(r, into: &b)
                XCTAssertEqual(
                    a.map(\.bitPattern), b.map(\.bitPattern), "\(type) → \(format) row \(r): \(mismatch(b, a) ?? "")", file: file,
                    line: line)
            }
        }
    }

    func repacked(_ t: SourceTensor, format: WeightFormat) throws -> QuantizedMatrix {
        let source = Converter.tensorSource(t, format: format, requantized: Converter.Counter())
        let count = QuantizedMatrix.bytesPerRow(format: format, cols: t.cols) * t.rows
        let storage = QuantizedStorage(byteCount: count)
        var written = 0
        try source.produce { chunk in
            XCTAssertLessThanOrEqual(written + chunk.count, count)
            (storage.bytes + written).copyMemory(from: chunk.baseAddress!, byteCount: chunk.count)
            written += chunk.count
        }
        XCTAssertEqual(written, count)
        return QuantizedMatrix(format: format, rows: t.rows, cols: t.cols, data: UnsafeRawPointer(storage.bytes), owner: storage)
    }

    func testRandomBlocksRepackExactly() throws {
        var g = SeededGenerator(seed: 42)
        for (type, format) in [
            (GGMLType.Q8_0, WeightFormat.int8), (.Q4_0, .int8), (.Q5_0, .int8), (.Q5_0, .int5), (.Q4_K, .int4), (.Q6_K, .int6),
        ] {
            let cols = 512, rows = 5
            let blocks = rows * cols / type.traits!.blockSize
            try checkExact(type, bytes: randomBlocks(type, count: blocks, generator: &g), rows: rows, cols: cols, format: format)
        }
        // int5 rows that end in a truncated superblock (896: 3.5 superblocks; 96: three groups, one unpaired).
        for cols in [896, 96] {
            try checkExact(.Q5_0, bytes: randomBlocks(.Q5_0, count: 3 * cols / 32, generator: &g), rows: 3, cols: cols, format: .int5)
        }
    }

    func testHandBuiltBlocksRepackExactly() throws {
        try checkExact(.Q4_K, bytes: HandBuiltBlocks.q4_K().0, rows: 1, cols: 256, format: .int4)
        try checkExact(.Q5_0, bytes: HandBuiltBlocks.q5_0().0, rows: 1, cols: 32, format: .int8)
        try checkExact(.Q5_0, bytes: HandBuiltBlocks.q5_0().0, rows: 1, cols: 32, format: .int5)
        try checkExact(.Q4_0, bytes: HandBuiltBlocks.q4_0().0, rows: 1, cols: 32, format: .int8)
        try checkExact(.Q8_0, bytes: HandBuiltBlocks.q8_0().0, rows: 1, cols: 32, format: .int8)
    }

    /// Q6_K → int6 on random blocks (random bytes: every scale from −128 to 127, every code) of
    /// several row lengths, and on hand-built blocks with extreme scales, codes and d, compared with
    /// the values written beside the hand-built blocks (HandBuiltBlocks builds them from the GGUF
    /// layout, independently of ModelImport) as well as with the converter's Q6_K dequantization.
    func testQ6_KRepacksToInt6Exactly() throws {
        var g = SeededGenerator(seed: 66)
        for (rows, cols) in [(1, 256), (3, 1536), (2, 8960)] {
            try checkExact(.Q6_K, bytes: randomBlocks(.Q6_K, count: rows * cols / 256, generator: &g), rows: rows, cols: cols, format: .int6)
        }
        let extremeQ = (0..<256).map { i in [-32, 31, 0, -1, 1, -31][i % 6] }
        let scaleSets: [[Int8]] = [
            (0..<16).map { [-128, 127, 0, 1, -1, 64, -64, 2][$0 % 8] }, [Int8](repeating: -128, count: 16), [Int8](repeating: 127, count: 16),
        ]
        // Float16's largest, a negative, its smallest subnormal, and zero.
        for d: Float in [65504, -0.75, 5.9604645e-8, 0] {
            for scales in scaleSets {
                let (bytes, expected) = HandBuiltBlocks.q6_K(scales: scales, q: extremeQ, d: d)
                try checkExact(.Q6_K, bytes: bytes, rows: 1, cols: 256, format: .int6)
                try bytes.withUnsafeBytes { raw in
                    let t = SourceTensor(name: "w", type: .Q6_K, rows: 1, cols: 256, isVector: false, data: raw.baseAddress!, owner: NSObject())
                    let m = try repacked(t, format: .int6)
                    var got = [Float](repeating: .nan, count: 256)
                    m.dequantizeRow(0, into: &got)
                    XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "d \(d) scales \(scales): \(mismatch(got, expected) ?? "")")
                }
            }
        }
        try checkExact(.Q6_K, bytes: HandBuiltBlocks.q6_K().0, rows: 1, cols: 256, format: .int6)
    }

    func testQ6_KIsExactWhenScalesShareAFactorAndCloseOtherwise() throws {
        // Sub-block scales (4, 8) share 4 with small q: exact. (Scales 127 and 126, |q| up to 32: requantized.)
        let q = (0..<256).map { ($0 % 8) - 4 }
        let exactScales: [Int8] = (0..<16).map { $0 % 2 == 0 ? 4 : 8 }
        let (exactBytes, _) = HandBuiltBlocks.q6_K(scales: exactScales, q: q, d: 0.125)
        try checkExact(.Q6_K, bytes: exactBytes, rows: 1, cols: 256, format: .int8)
        let counter = Converter.Counter()
        exactBytes.withUnsafeBytes { raw in
            let out = UnsafeMutableRawPointer.allocate(byteCount: 8 * 34, alignment: 64)
            defer { out.deallocate() }
            counter.value = Repack.q6_KToInt8(raw.baseAddress!, out, superblocks: 1)
        }
        XCTAssertEqual(counter.value, 0, "every group of this block is exactly representable")

        var g = SeededGenerator(seed: 7)
        let bytes = randomBlocks(.Q6_K, count: 8, generator: &g)
        try bytes.withUnsafeBytes { raw in
            let t = SourceTensor(name: "w", type: .Q6_K, rows: 4, cols: 512, isVector: false, data: raw.baseAddress!, owner: NSObject())
            let m = try repacked(t, format: .int8)
            var a = [Float](repeating: 0, count: 512), b = [Float](repeating: 0, count: 512)
            for r in 0..<4 {
                t.dequantizeRow(r, into: &a)
                m.dequantizeRow(r, into: &b)
                // Requantization error: at most half an int8 step of the group's max (plus Float16 rounding of the scale).
                for gi in 0..<16 {
                    let amax = a[32 * gi..<32 * gi + 32].map(abs).max()!
                    XCTAssertNil(
                        mismatch(b[32 * gi..<32 * gi + 32], a[32 * gi..<32 * gi + 32], absolute: amax / 127 * 0.51 + 1e-6),
                        "row \(r) group \(gi)")
                }
            }
        }
    }

    /// The real model: every Q8_0, Q5_0 (to int8 and int5), Q4_K and Q6_K (to int6) tensor of a few
    /// layers repacks bit-exactly.
    func testRealTensorsRepackExactly() throws {
        let path = defaultGGUFPath().path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("the default model's GGUF is missing at \(path): run tools/fetch-model default")
            return
        }
        let file = try GGUFFile(path: path)
        let model = try file.importModel()
        var checked: [GGMLType: Int] = [:]
        for t in model.tensors where t.name.hasPrefix("blk.0.") || t.name.hasPrefix("blk.11.") || t.name == "output.weight" {
            let formats: [WeightFormat]
            switch t.type {
            case .Q8_0: formats = [.int8]
            case .Q5_0: formats = [.int8, .int5]
            case .Q4_K: formats = [.int4]
            case .Q6_K: formats = [.int6]
            default: continue
            }
            for format in formats {
                let q = try repacked(t, format: format)
                var a = [Float](repeating: 0, count: t.cols), b = [Float](repeating: 0, count: t.cols)
                // All rows of layer tensors; a stride through the 151,936 output rows.
                for r in stride(from: 0, to: t.rows, by: t.rows > 10_000 ? 97 : 1) {
                    t.dequantizeRow(r, into: &a)
                    q.dequantizeRow(r, into: &b)
                    if a.map(\.bitPattern) != b.map(\.bitPattern) {
                        XCTFail("\(t.name) (\(t.type) → \(format)) row \(r): \(mismatch(b, a) ?? "")")
                        break
                    }
                }
            }
            checked[t.type, default: 0] += 1
        }
        XCTAssertEqual(Set(checked.keys), [.Q8_0, .Q5_0, .Q4_K, .Q6_K], "expected tensors of each exact type among those checked")
    }
}
