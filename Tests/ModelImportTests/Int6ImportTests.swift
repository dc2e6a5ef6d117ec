import Foundation
import XCTest
import Tensor
import TestSupport
import ModelImport
import Transformer

/// A tiny GGUF whose ffn_down matrices are Q6_K, converted end to end: `auto` stores them as int6
/// with the GGUF's values bit for bit in a version-2 file, the model computes with them what it
/// computes with the same values in f32, and `int8` still gives the int8 repack in a version-1 file.
final class Int6ImportTests: XCTestCase {
    func tinyQ6_KModel() throws -> String {
        let fixture = TinyModelFixture(flavour: .qwen2, ffn: 256)
        var builder = try fixture.ggufBuilder()
        var g = SeededGenerator(seed: 606)
        var replaced = 0
        for i in builder.tensors.indices where builder.tensors[i].name.hasSuffix("ffn_down.weight") {
            let rows = builder.tensors[i].dimensions[1], cols = builder.tensors[i].dimensions[0]
            XCTAssertEqual(cols, 256)
            var data: [UInt8] = []
            for _ in 0..<rows * cols / 256 {
                // Values of the size of the fixture's other weights (|w| ≤ 1), every scale and code used.
                let scales = (0..<16).map { _ in Int8.random(in: -128...127, using: &g) }
                let q = (0..<256).map { _ in Int.random(in: -32...31, using: &g) }
                data += HandBuiltBlocks.q6_K(scales: scales, q: q, d: Float.random(in: 0.0001...0.00025, using: &g)).0
            }
            builder.tensors[i].type = GGMLType.Q6_K.rawValue
            builder.tensors[i].data = data
            replaced += 1
        }
        XCTAssertEqual(replaced, fixture.layers)
        let path = temporaryPath("int6-\(UUID().uuidString).gguf")
        try builder.write(to: path)
        return path
    }

    func fileVersion(_ path: String) throws -> UInt32 {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(12)
        return bytes.suffix(4).enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    func testQ6_KImportsAsInt6Exactly() throws {
        let model = try Converter.load(try tinyQ6_KModel())
        let path = temporaryPath("int6-\(UUID().uuidString).sarvam")
        let summary = try Converter.convert(model, to: path)
        XCTAssertEqual(summary.formats[.int6], 2, "the converter's report counts the int6 tensors")
        XCTAssertEqual(summary.requantizedGroups, 0)
        XCTAssertEqual(try fileVersion(path), 2, "a file holding int6 is version 2, which older readers refuse")
        let file = try WeightFile.open(path, verify: true)
        var checked = 0
        for source in model.tensors where source.type == .Q6_K {
            let stored = try file.tensor(named: source.name)
            XCTAssertEqual(stored.format, .int6, source.name)
            var a = [Float](repeating: 0, count: source.cols), b = a
            for r in 0..<source.rows {
                source.dequantizeRow(r, into: &a)
                stored.dequantizeRow(r, into: &b)
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(source.name) row \(r): \(mismatch(b, a) ?? "")")
            }
            checked += 1
        }
        XCTAssertEqual(checked, 2)

        // The old int8 form on request: no int6, so the file stays readable by version-1 builds.
        let int8Path = temporaryPath("int6-as-int8-\(UUID().uuidString).sarvam")
        let int8Summary = try Converter.convert(model, to: int8Path, policy: .int8)
        XCTAssertNil(int8Summary.formats[.int6])
        XCTAssertEqual(try fileVersion(int8Path), 1)
        XCTAssertEqual(try WeightFile.open(int8Path).tensor(named: "blk.0.ffn_down.weight").format, .int8)
    }

    /// The int6 model's logits against the same weights in f32 (f32 holds the Q6_K values exactly; the
    /// float path quantizes no activations): only the int8 activation quantization of ffn_down's
    /// input separates them. Its size is measured against the `int8` conversion of the same model
    /// (every matrix int8: weights requantized and every matmul's activations quantized, one scale
    /// per 32), which must be the larger error; a wrong sub-block scale or a lost superblock would
    /// make int6's error far larger.
    func testInt6ModelComputesWhatItsFloatValuesDo() throws {
        let model = try Converter.load(try tinyQ6_KModel())
        let pool = ThreadPool(threads: 2)
        func logits(_ policy: QuantizationPolicy) throws -> [Float] {
            let path = temporaryPath("int6-forward-\(UUID().uuidString).sarvam")
            _ = try Converter.convert(model, to: path, policy: policy)
            let m = try Model(file: try WeightFile.open(path, verify: true), pool: pool)
            let cache = try m.makeCache(memoryBudget: 1 << 20, precision: .float32)
            let out = try m.forward([SequenceInput(sequence: cache.makeSequence(), tokens: [6, 0, 1, 3, 4, 2, 7], logits: .all)])
            return (0..<out.rowCount).flatMap { out.array(row: $0) }
        }
        let int6 = try logits(.auto), f32 = try logits(.f32), int8 = try logits(.int8)
        func relativeRMS(_ a: [Float]) -> Float {
            let e = zip(a, f32).map { ($0 - $1) * ($0 - $1) }.reduce(0, +), n = f32.map { $0 * $0 }.reduce(0, +)
            return (e / n).squareRoot()
        }
        XCTAssertLessThan(relativeRMS(int6), relativeRMS(int8), "int6 (exact weights) should be closer to f32 than int8")
        XCTAssertLessThan(relativeRMS(int6), 0.05)
    }
}
