import Foundation
import XCTest
import Tokenizer
import ModelImport

/// SentencePiece-style vocabularies (Llama 2) from GGUF metadata and from a Hugging Face tokenizer.json.
final class TokenizerImportTests: XCTestCase {
    let pieces = ["<unk>", "<s>", "</s>", "<0x0A>", "▁a", "▁b", "ab", "▁ab", "c", "<|im_end|>"]

    func testSentencePieceFromGGUF() throws {
        var b = try TinyModelFixture(flavour: .llama).ggufBuilder()
        b.set("tokenizer.ggml.model", .string("llama"))
        b.set("tokenizer.ggml.pre", .string("default"))
        b.set("tokenizer.ggml.tokens", .array(.string(pieces)))
        b.set("tokenizer.ggml.scores", .array(.float32([0, 0, 0, 0, -1, -2, -3, -4, -5, -.infinity])))
        b.set("tokenizer.ggml.token_type", .array(.int32([2, 3, 3, 6, 1, 1, 1, 1, 1, 3])))
        b.set("tokenizer.ggml.bos_token_id", .uint32(1))
        b.set("tokenizer.ggml.eos_token_id", .uint32(2))
        b.set("tokenizer.ggml.unknown_token_id", .uint32(0))
        b.metadata.removeAll {
            ["tokenizer.ggml.merges", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.padding_token_id"].contains($0.key)
        }
        let t = try openGGUF(b).importModel().tokenizer
        XCTAssertEqual(t.kind, .sentencePiece)
        XCTAssertEqual(t.tokens, pieces)
        XCTAssertEqual(t.scores.count, pieces.count)
        XCTAssertEqual(t.scores[9], -Float.greatestFiniteMagnitude, "non-finite scores are clamped so that JSON can hold them")
        XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.unknownTokenId, 0)
        XCTAssertTrue(t.addBosToken, "llama.cpp's default for SentencePiece")
        XCTAssertTrue(t.addSpacePrefix)
        XCTAssertEqual(t.endOfTurnTokenIds, [2, 9])
        XCTAssertNoThrow(try JSONEncoder().encode(t))
    }

    func testUnknownTokenizerModelIsRefused() throws {
        var b = try TinyModelFixture(flavour: .llama).ggufBuilder()
        b.set("tokenizer.ggml.model", .string("bert"))
        XCTAssertThrowsError(try openGGUF(b).importModel()) {
            XCTAssertTrue("\($0)".contains("tokenizer model 'bert' is not supported"), "\($0)")
        }
    }

    func testSentencePieceFromHuggingFaceTokenizerJSON() throws {
        let fixture = TinyModelFixture(flavour: .llama)
        let folder = temporaryPath("hf-spm-\(UUID().uuidString)")
        try fixture.writeHuggingFace(to: folder)
        var vocab: [String: Int] = [:]
        for (i, p) in pieces.enumerated() where p != "<|im_end|>" { vocab[p] = i }
        let tokenizer: [String: Any] = [
            "added_tokens": [
                ["id": 0, "content": "<unk>", "special": true], ["id": 1, "content": "<s>", "special": true],
                ["id": 2, "content": "</s>", "special": true], ["id": 9, "content": "<|im_end|>", "special": true],
            ],
            "normalizer": [
                "type": "Sequence",
                "normalizers": [["type": "Prepend", "prepend": "▁"], ["type": "Replace", "pattern": ["String": " "], "content": "▁"]],
            ],
            "pre_tokenizer": NSNull(),
            "model": ["type": "BPE", "vocab": vocab, "merges": ["▁ a", "a b", "▁ ab"], "byte_fallback": true, "unk_token": "<unk>"],
        ]
        try fixture.write(json: tokenizer, to: folder + "/tokenizer.json")
        try fixture.write(json: ["bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"], to: folder + "/tokenizer_config.json")
        let t = try Converter.load(folder).tokenizer
        XCTAssertEqual(t.kind, .sentencePiece)
        XCTAssertEqual(Array(t.tokens.prefix(pieces.count)), pieces)
        XCTAssertEqual(
            Array(t.tokenTypes.prefix(pieces.count)), [2, 3, 3, 6, 1, 1, 1, 1, 1, 3], "<unk> is unknown (2), as in Llama 2 GGUF files")
        XCTAssertEqual(t.merges, ["▁ a", "a b", "▁ ab"])
        XCTAssertEqual(t.scores.count, t.tokens.count)
        XCTAssertGreaterThan(t.scores[4], t.scores[5], "earlier pieces rank higher")
        XCTAssertEqual(t.bosTokenId, 1)
        XCTAssertEqual(t.eosTokenId, 2)
        XCTAssertEqual(t.unknownTokenId, 0)
        XCTAssertTrue(t.addBosToken)
        XCTAssertTrue(t.addSpacePrefix)
        XCTAssertEqual(t.endOfTurnTokenIds, [2, 9])
    }
}
