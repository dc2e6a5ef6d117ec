import XCTest
import TestSupport
import ModelImport

/// Hand-built blocks of every supported type dequantize to hand-computed values, directly and
/// through a GGUF file written by the test helper.
final class DequantizationTests: XCTestCase {
    func testHandBuiltBlocks() {
        for (type, bytes, expected) in HandBuiltBlocks.all() {
            let traits = type.traits!
            XCTAssertEqual(bytes.count, traits.bytesPerBlock, "\(type) block size")
            XCTAssertEqual(expected.count, traits.blockSize)
            var out = [Float](repeating: .nan, count: expected.count)
            bytes.withUnsafeBytes { src in
                out.withUnsafeMutableBufferPointer { type.dequantizeRow(src.baseAddress!, $0.baseAddress!, cols: expected.count) }
            }
            XCTAssertNil(mismatch(out, expected), "\(type)")
        }
    }

    func testSpotValuesWorkedOutByHand() {
        func values(_ block: ([UInt8], [Float]), _ type: GGMLType) -> [Float] {
            var out = [Float](repeating: 0, count: type.traits!.blockSize)
            block.0.withUnsafeBytes { src in
                out.withUnsafeMutableBufferPointer { type.dequantizeRow(src.baseAddress!, $0.baseAddress!, cols: $0.count) }
            }
            return out
        }
        let q4k = values(HandBuiltBlocks.q4_K(), .Q4_K)
        XCTAssertEqual(q4k[64 * 2 + 32 + 5], 211)  // group 5: 33·7 − 0.5·40
        XCTAssertEqual(q4k[0], 0)  // group 0: 1·0 − 0
        XCTAssertEqual(q4k[255], 63 * 2 - 31.5)  // group 7, l = 31, c = 3: q = 34 % 16 = 2
        let q6k = values(HandBuiltBlocks.q6_K(), .Q6_K)
        XCTAssertEqual(q6k[0], 0.25 * -8 * -32)  // q[0] = −32, sc[0] = −8
        XCTAssertEqual(q6k[255], 0.25 * 7 * Float((255 * 7) % 64 - 32))
        let q5 = values(HandBuiltBlocks.q5_0(), .Q5_0)
        XCTAssertEqual([q5[0], q5[15], q5[16], q5[31]], [0, 15, -16, -1])
    }

    func testHalfAndBFloat16() {
        for (type, table) in [(GGMLType.F16, HandBuiltBlocks.f16), (.BF16, HandBuiltBlocks.bf16)] {
            let bytes = table.flatMap { le($0.0) }
            var out = [Float](repeating: .nan, count: table.count)
            bytes.withUnsafeBytes { src in
                out.withUnsafeMutableBufferPointer { type.dequantizeRow(src.baseAddress!, $0.baseAddress!, cols: table.count) }
            }
            XCTAssertEqual(out, table.map(\.1), "\(type)")
        }
    }

    func testEveryTypeThroughAGGUFFile() throws {
        var b = GGUFBuilder()
        var expected: [String: [Float]] = [:]
        for (type, bytes, values) in HandBuiltBlocks.all() {
            // Two rows: the block, then the block again (rows must be independent).
            b.add("t.\(type)", dimensions: [values.count, 2], type: type, data: bytes + bytes)
            expected["t.\(type)"] = values + values
        }
        b.add("t.F32", dimensions: [3], floats: [1, -2, 3.5])
        expected["t.F32"] = [1, -2, 3.5]
        b.add("t.F16", dimensions: [HandBuiltBlocks.f16.count], type: .F16, data: HandBuiltBlocks.f16.flatMap { le($0.0) })
        expected["t.F16"] = HandBuiltBlocks.f16.map(\.1)
        b.add("t.BF16", dimensions: [HandBuiltBlocks.bf16.count], type: .BF16, data: HandBuiltBlocks.bf16.flatMap { le($0.0) })
        expected["t.BF16"] = HandBuiltBlocks.bf16.map(\.1)
        let file = try openGGUF(b)
        for t in file.tensors {
            XCTAssertNil(mismatch(try file.dequantize(t), expected[t.name]!), t.name)
        }
        XCTAssertEqual(Set(file.tensors.map(\.type)), Set(GGMLType.supported))
    }
}
