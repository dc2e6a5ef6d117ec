import Foundation
import XCTest
import Tensor
import TestSupport
import Tokenizer
import ModelImport
import Transformer

/// The quantization policy table, and the converted default model in weights/ against its GGUF.
final class QuantizationPolicyTests: XCTestCase {
    func tensor(_ type: GGMLType, cols: Int = 256, vector: Bool = false, name: String = "t") -> SourceTensor {
        SourceTensor(
            name: name, type: type, rows: vector ? 1 : 4, cols: cols, isVector: vector, data: UnsafeRawPointer(bitPattern: 64)!,
            owner: NSObject())
    }

    func testAutoKeepsTheSourcePrecision() {
        let expected: [GGMLType: WeightFormat] = [
            .Q8_0: .int8, .Q5_0: .int5, .Q4_0: .int8, .Q5_1: .int8, .Q4_1: .int8, .Q6_K: .int6, .Q5_K: .int8,
            .Q4_K: .int4, .F16: .f16, .BF16: .f16, .F32: .f32,
        ]
        for (type, format) in expected {
            XCTAssertEqual(QuantizationPolicy.auto.format(for: tensor(type)) { true }, format, "\(type)")
            XCTAssertEqual(QuantizationPolicy.auto.format(for: tensor(type, vector: true)) { true }, .f32, "\(type) vectors stay f32")
        }
    }

    func testForcedFormatsAndFallbacks() {
        for policy in [QuantizationPolicy.int8, .int4, .f16, .f32] {
            XCTAssertEqual(policy.format(for: tensor(.Q4_K)) { true }.rawValue, policy.rawValue)
            XCTAssertEqual(policy.format(for: tensor(.F32, vector: true)) { true }, .f32)
        }
        // int4 keeps Q4_K_M's sensitive matrices in int8 unless the source already holds them in
        // Q4_K or Q5_0 (then exactly in int4 or int5).
        for name in ["output.weight", "blk.3.attn_v.weight", "blk.3.ffn_down.weight"] {
            XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q6_K, name: name)) { true }, .int8, name)
            XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q4_K, name: name)) { true }, .int4, name)
            XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: name)) { true }, .int5, name)
            XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.F16, name: name)) { true }, .int8, name)
        }
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.3.ffn_up.weight")) { true }, .int4)
        // ... and the whole first and last layers, on the same terms (the last one when the layer
        // count is given).
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.0.ffn_up.weight")) { true }, .int5)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q8_0, name: "blk.0.ffn_up.weight")) { true }, .int8)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q4_K, name: "blk.0.ffn_up.weight")) { true }, .int4)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.10.attn_q.weight"), layers: 24) { true }, .int4)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.23.attn_q.weight"), layers: 24) { true }, .int5)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.23.attn_q.weight"), layers: 28) { true }, .int4)
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.Q5_0, name: "blk.2.ffn_up.weight"), layers: 3) { true }, .int5)
        // Quantized formats need whole groups of 32; values beyond Float16's range keep f32.
        XCTAssertEqual(QuantizationPolicy.int4.format(for: tensor(.F16, cols: 40)) { true }, .f16)
        XCTAssertEqual(QuantizationPolicy.int8.format(for: tensor(.F32, cols: 40)) { false }, .f32)
        XCTAssertEqual(QuantizationPolicy.auto.format(for: tensor(.BF16)) { false }, .f32)
        XCTAssertEqual(QuantizationPolicy.f16.format(for: tensor(.F16)) { false }, .f16, "F16 always fits")
        // int6 holds whole superblocks of 256 only (any Q6_K source has them); `int8` forces the old int8 repack.
        XCTAssertEqual(QuantizationPolicy.auto.format(for: tensor(.Q6_K, cols: 1536)) { true }, .int6)
        XCTAssertEqual(QuantizationPolicy.auto.format(for: tensor(.Q6_K, cols: 288)) { true }, .int8)
        XCTAssertEqual(QuantizationPolicy.int8.format(for: tensor(.Q6_K, cols: 1536)) { true }, .int8)
    }
}

final class ConvertedDefaultModelTests: XCTestCase {
    func open(_ variant: String?) throws -> WeightFile {
        let path = defaultModelPath(variant: variant).path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("\(path) is missing: run tools/fetch-model default (the test command does)")
            throw XCTSkip("missing weights")
        }
        return try WeightFile.open(path, verify: true)
    }

    func testDefaultFileDescribesTheModel() throws {
        let file = try open(nil)
        XCTAssertEqual(file.description.model.architecture, .qwen2)
        XCTAssertEqual(file.description.model.ropeLayout, .halves)
        XCTAssertEqual(file.description.model.numHiddenLayers, 24)
        // Decoded with the Tokenizer module's own reader, as the runtime does.
        let tokenizer = try TokenizerDescription.decodeJSON(file.description.tokenizer)
        XCTAssertEqual(tokenizer.tokens.count, 151_936)
        XCTAssertEqual(tokenizer.endOfTurnTokenIds.first, 151_645)
        XCTAssertTrue(file.description.chatTemplate?.contains("<|im_start|>") ?? false)
        XCTAssertEqual(file.tensors.count, 291)
    }

    /// Tensors stored exactly (auto policy) equal the GGUF's dequantization bit for bit.
    func testExactTensorsMatchTheGGUF() throws {
        let ggufPath = defaultGGUFPath().path
        guard FileManager.default.fileExists(atPath: ggufPath) else {
            XCTFail("\(ggufPath) is missing: run tools/fetch-model default")
            return
        }
        let file = try open(nil)
        let gguf = try GGUFFile(path: ggufPath).importModel()
        var exactTypes = Set<GGMLType>()
        // blk.10's ffn_down is Q6_K (int6, exact); blk.11 has Q5_0, Q4_K and F32.
        for source in gguf.tensors
        where source.name.hasPrefix("blk.11.") || source.name == "blk.10.ffn_down.weight" || source.name == "token_embd.weight" {
            let stored = try file.tensor(named: source.name)
            let expectedFormat = QuantizationPolicy.auto.format(for: source) { true }
            XCTAssertEqual(stored.format, expectedFormat, source.name)
            var a = [Float](repeating: 0, count: source.cols), b = a
            for r in stride(from: 0, to: source.rows, by: source.rows > 10_000 ? 1009 : 7) {
                source.dequantizeRow(r, into: &a)
                stored.dequantizeRow(r, into: &b)
                guard a.map(\.bitPattern) == b.map(\.bitPattern) else {
                    XCTFail("\(source.name) row \(r): \(mismatch(b, a) ?? "")")
                    break
                }
            }
            exactTypes.insert(source.type)
        }
        XCTAssertEqual(exactTypes, [.F32, .Q5_0, .Q4_K, .Q6_K])
    }

    func testVariantsFollowTheirPolicy() throws {
        let int8 = try open("int8")
        XCTAssertEqual(Set(int8.tensors.filter { $0.rows > 1 }.map(\.format)), [.int8])
        XCTAssertEqual(Set(int8.tensors.filter { $0.rows == 1 }.map(\.format)), [.f32])

        // int4 (Q4_K_M's mix plus the first and last layers): output, token embedding, attn_v and
        // all of blk.0 and blk.23 in int8 unless the GGUF holds them in Q4_K or Q5_0 (then int4 or
        // int5, exactly; its ffn_down is Q4_K or Q6_K by layer); everything else int4. The file records the policy as it is now
        // defined, else it is stale: tools/fetch-model converts it again.
        let int4 = try open("int4")
        XCTAssertEqual(
            int4.description.quantization, QuantizationPolicy.int4.summary,
            "\(int4.path) was converted with another int4 policy: run tools/fetch-model default --test-variants")
        XCTAssertEqual(int8.description.quantization, QuantizationPolicy.int8.summary)
        let gguf = try GGUFFile(path: defaultGGUFPath().path)
        for t in int4.tensors where t.rows > 1 {
            let sensitive =
                t.name == "output.weight" || t.name == "token_embd.weight" || t.name.hasSuffix("attn_v.weight")
                || t.name.hasSuffix("ffn_down.weight") || t.name.hasPrefix("blk.0.") || t.name.hasPrefix("blk.23.")
            let type = gguf.tensorInfo(named: t.name)?.type
            let expected: WeightFormat = !sensitive || type == .Q4_K ? .int4 : type == .Q5_0 ? .int5 : .int8
            XCTAssertEqual(t.format, expected, t.name)
        }
    }
}
