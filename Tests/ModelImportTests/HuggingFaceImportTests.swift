import Foundation
import XCTest
import Tensor
import TestSupport
import Tokenizer
import ModelImport
import Transformer

/// A tiny Hugging Face folder and the equivalent GGUF (same numbers; llama.cpp's q/k permutation for
/// Llama) import to the same description and weights.
final class HuggingFaceImportTests: XCTestCase {
    func importBoth(_ flavour: TinyModelFixture.Flavour) throws -> (hf: ImportedModel, gguf: ImportedModel, fixture: TinyModelFixture) {
        let fixture = TinyModelFixture(flavour: flavour)
        let folder = temporaryPath("hf-\(flavour)-\(UUID().uuidString)")
        try fixture.writeHuggingFace(to: folder)
        let ggufPath = temporaryPath("tiny-\(flavour)-\(UUID().uuidString).gguf")
        try fixture.writeGGUF(to: ggufPath)
        return (try Converter.load(folder), try Converter.load(ggufPath), fixture)
    }

    func testSameDescription() throws {
        for flavour in [TinyModelFixture.Flavour.llama, .qwen2] {
            let (hf, gguf, fixture) = try importBoth(flavour)
            var expected = gguf.configuration
            XCTAssertEqual(gguf.configuration.ropeLayout, flavour == .llama ? .interleaved : .halves)
            expected.ropeLayout = .halves
            XCTAssertEqual(hf.configuration, expected, "\(flavour): configurations differ only in ropeLayout")
            XCTAssertEqual(hf.configuration.tieWordEmbeddings, fixture.tied)
            XCTAssertEqual(hf.configuration.attentionBias, fixture.bias)
            XCTAssertEqual(hf.configuration.vocabSize, fixture.vocab)
            XCTAssertEqual(hf.tokenizer, gguf.tokenizer, "\(flavour): tokenizer descriptions")
            XCTAssertEqual(hf.tokenizer.preTokenizer, flavour == .llama ? "llama3" : "qwen2")
            XCTAssertEqual(hf.tokenizer.tokenTypes, [1, 1, 1, 1, 1, 3, 3, 3, 4, 5])
            XCTAssertEqual(hf.tokenizer.endOfTurnTokenIds, [7, 5])
            XCTAssertEqual(hf.chatTemplate, gguf.chatTemplate)
            XCTAssertEqual(hf.tensors.map(\.name), gguf.tensors.map(\.name))
        }
    }

    func testSameWeightsUpToTheQKPermutation() throws {
        for flavour in [TinyModelFixture.Flavour.llama, .qwen2] {
            let (hf, gguf, fixture) = try importBoth(flavour)
            for (a, b) in zip(hf.tensors, gguf.tensors) {
                XCTAssertEqual([a.rows, a.cols], [b.rows, b.cols], a.name)
                var values = a.dequantized()
                if flavour == .llama && (a.name.hasSuffix("attn_q.weight") || a.name.hasSuffix("attn_k.weight")) {
                    let heads = a.name.hasSuffix("attn_q.weight") ? fixture.heads : fixture.kvHeads
                    values = TinyModelFixture.permuteRows(values, rows: a.rows, cols: a.cols, heads: heads)
                }
                XCTAssertEqual(values, b.dequantized(), "\(flavour) \(a.name)")
            }
        }
    }

    /// What the permutation is for: q·RoPE computed from HF rows with "halves" equals q·RoPE computed
    /// from the permuted GGUF rows with "interleaved", up to the same permutation of the output.
    func testPermutedInterleavedRopeEqualsHalvesRope() throws {
        let (hf, gguf, fixture) = try importBoth(.llama)
        let d = fixture.headDim
        var g = SeededGenerator(seed: 5)
        let x = g.floats(fixture.hidden)
        func project(_ t: SourceTensor) -> [Float] {
            let w = t.dequantized()
            return (0..<t.rows).map { r in (0..<t.cols).reduce(Float(0)) { $0 + w[r * t.cols + $1] * x[$1] } }
        }
        func rope(_ v: [Float], heads: Int, position: Int, interleaved: Bool) -> [Float] {
            var out = v
            for h in 0..<heads {
                for i in 0..<d / 2 {
                    let angle = Float(position) * pow(500_000, -Float(2 * i) / Float(d))
                    let (a, b) = interleaved ? (h * d + 2 * i, h * d + 2 * i + 1) : (h * d + i, h * d + i + d / 2)
                    out[a] = v[a] * cos(angle) - v[b] * sin(angle)
                    out[b] = v[a] * sin(angle) + v[b] * cos(angle)
                }
            }
            return out
        }
        for name in ["blk.0.attn_q.weight", "blk.1.attn_k.weight"] {
            let heads = name.contains("attn_q") ? fixture.heads : fixture.kvHeads
            let a = rope(project(hf.tensor(named: name)!), heads: heads, position: 7, interleaved: false)
            let b = rope(project(gguf.tensor(named: name)!), heads: heads, position: 7, interleaved: true)
            XCTAssertNil(mismatch(TinyModelFixture.permuteRows(a, rows: a.count, cols: 1, heads: heads), b, absolute: 1e-5), name)
        }
    }

    func testConvertedFilesMatch() throws {
        let (hf, gguf, _) = try importBoth(.qwen2)
        let a = temporaryPath("hf.sarvam"), b = temporaryPath("gguf.sarvam")
        _ = try Converter.convert(hf, to: a)
        _ = try Converter.convert(gguf, to: b)
        let fa = try WeightFile.open(a, verify: true), fb = try WeightFile.open(b, verify: true)
        XCTAssertEqual(fa.description.model, fb.description.model)
        XCTAssertEqual(fa.description.tokenizer, fb.description.tokenizer)
        XCTAssertEqual(
            try TokenizerDescription.decodeJSON(fa.description.tokenizer), hf.tokenizer, "the Tokenizer module reads back what was stored")
        XCTAssertEqual(fa.description.chatTemplate, hf.chatTemplate)
        XCTAssertEqual(fa.tensors.map(\.checksum), fb.tensors.map(\.checksum), "identical tensor bytes")
        // BF16 matrices are stored as f16 under auto (these values fit), norms and biases as f32.
        XCTAssertEqual(fa.info(named: "blk.0.attn_q.weight")?.format, .f16)
        XCTAssertEqual(fa.info(named: "blk.0.attn_q.bias")?.format, .f32)
    }

    func testBadFoldersAreRefusedWithReasons() throws {
        let fixture = TinyModelFixture(flavour: .llama)
        let folder = temporaryPath("hf-bad-\(UUID().uuidString)")
        try fixture.writeHuggingFace(to: folder)
        var config =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/config.json"))) as! [String: Any]
        config["architectures"] = ["MistralForCausalLM"]
        try fixture.write(json: config, to: folder + "/config.json")
        XCTAssertThrowsError(try Converter.load(folder)) {
            XCTAssertTrue("\($0)".contains("'MistralForCausalLM' is not supported"), "\($0)")
        }
        config["architectures"] = ["LlamaForCausalLM"]
        config["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0]
        try fixture.write(json: config, to: folder + "/config.json")
        XCTAssertThrowsError(try Converter.load(folder)) { XCTAssertTrue("\($0)".contains("RoPE scaling 'llama3'"), "\($0)") }
        config["rope_scaling"] = NSNull()
        try fixture.write(json: config, to: folder + "/config.json")
        XCTAssertNoThrow(try Converter.load(folder))
        // A safetensors file cut short.
        let path = folder + "/model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count - 10).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Converter.load(folder)) { XCTAssertTrue("\($0)".contains("past the end"), "\($0)") }
        try FileManager.default.removeItem(atPath: folder + "/config.json")
        XCTAssertThrowsError(try Converter.load(folder)) { XCTAssertTrue("\($0)".contains("no config.json"), "\($0)") }
    }
}
