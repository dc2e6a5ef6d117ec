import Foundation
import XCTest
import TestSupport
import ModelImport
import Transformer

/// The default model's GGUF dequantizes to the values in Tests/Fixtures/dequant.json, which were
/// computed independently (gguf-py's reference dequantization): first 16 values of some rows exactly,
/// and row sums.
final class ReferenceDequantTests: XCTestCase {
    struct Reference: Decodable {
        struct Row: Decodable { var first16: [Float]; var sum: Double; var sum_abs: Double }
        struct Entry: Decodable { var name: String; var type: String; var shape: [Int]; var rows: [String: Row] }
        var file_sha256: String
        var tensors: [Entry]
    }

    func openDefaultGGUF() throws -> GGUFFile {
        let path = defaultGGUFPath().path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("the default model's GGUF is missing at \(path): run tools/fetch-model default (the test command does)")
            throw XCTSkip("missing GGUF")
        }
        return try GGUFFile(path: path)
    }

    func testDequantizationMatchesReference() throws {
        let data = try fixtureData("dequant.json")
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        let file = try openDefaultGGUF()
        var typesSeen = Set<String>()
        for entry in reference.tensors {
            let info = try XCTUnwrap(file.tensorInfo(named: entry.name), "tensor \(entry.name) missing from the GGUF")
            XCTAssertEqual(info.type.name, entry.type, entry.name)
            XCTAssertEqual([info.rows, info.cols], entry.shape, entry.name)
            let src = try file.data(of: info)
            var row = [Float](repeating: 0, count: info.cols)
            for (key, expected) in entry.rows {
                let r = try XCTUnwrap(Int(key))
                row.withUnsafeMutableBufferPointer {
                    info.type.dequantizeRow(src + r * info.type.rowBytes(cols: info.cols), $0.baseAddress!, cols: info.cols)
                }
                XCTAssertNil(mismatch(row.prefix(16), expected.first16), "\(entry.name) row \(r) first 16")
                let sum = row.reduce(0.0) { $0 + Double($1) }
                let sumAbs = row.reduce(0.0) { $0 + Double(abs($1)) }
                XCTAssertEqual(sum, expected.sum, accuracy: 1e-9 * max(1, expected.sum_abs), "\(entry.name) row \(r) sum")
                XCTAssertEqual(sumAbs, expected.sum_abs, accuracy: 1e-9 * max(1, expected.sum_abs), "\(entry.name) row \(r) sum_abs")
            }
            typesSeen.insert(entry.type)
        }
        XCTAssertEqual(typesSeen, ["F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"], "the reference should cover every type in the file")
    }

    /// The default model's published architecture and tokenizer (Qwen2.5-Coder-0.5B-Instruct: Qwen2,
    /// 24 layers, hidden 896, 14/2 heads, ChatML with <|im_end|> ending a turn, no BOS).
    func testDefaultModelImportsWithItsPublishedConfiguration() throws {
        let model = try openDefaultGGUF().importModel()
        let c = model.configuration
        XCTAssertEqual(c, ModelConfigurationFixture.qwen25Coder05B)
        XCTAssertEqual(model.tokenizer.kind, .byteLevelBPE)
        XCTAssertEqual(model.tokenizer.preTokenizer, "qwen2")
        XCTAssertEqual(model.tokenizer.tokens.count, 151_936)
        XCTAssertEqual(model.tokenizer.merges.count, 151_387)
        XCTAssertEqual(model.tokenizer.tokens[151_645], "<|im_end|>")
        XCTAssertEqual(model.tokenizer.eosTokenId, 151_645)
        XCTAssertEqual(Set(model.tokenizer.endOfTurnTokenIds), [151_645, 151_643])
        XCTAssertFalse(model.tokenizer.addBosToken)
        XCTAssertTrue(model.chatTemplate?.contains("<|im_start|>") ?? false)
        XCTAssertEqual(model.tensors.count, 291)
    }
}

enum ModelConfigurationFixture {
    static let qwen25Coder05B = ModelConfiguration(
        architecture: .qwen2, numHiddenLayers: 24, hiddenSize: 896, numAttentionHeads: 14, numKeyValueHeads: 2,
        headDim: 64, intermediateSize: 4864, vocabSize: 151_936, ropeTheta: 1_000_000, ropeLayout: .halves,
        rmsNormEps: 1e-6, maxPositionEmbeddings: 32_768, tieWordEmbeddings: false, attentionBias: true)
}
