import Foundation
import TestSupport
import Tokenizer
import XCTest

/// Every line of Tests/Fixtures/tokenizer_cases.jsonl (produced by an independent Qwen2
/// byte-level BPE tokenizer, checked against llama.cpp and Hugging Face) must match exactly.
final class ReferenceCaseTests: XCTestCase {
    struct Case: Decodable {
        var text: String
        var ids: [Int]
        var ids_nospecial: [Int]
    }

    static func loadCases() throws -> [Case] {
        try fixtureData("tokenizer_cases.jsonl").split(separator: UInt8(ascii: "\n")).filter { !$0.isEmpty }.map {
            try JSONDecoder().decode(Case.self, from: Data($0))
        }
    }

    func testEveryCaseWithAndWithoutSpecialTokens() throws {
        let tokenizer = try defaultTokenizer()
        let cases = try Self.loadCases()
        XCTAssertGreaterThan(cases.count, 30)
        for c in cases {
            XCTAssertEqual(tokenizer.encodeTrusted(template: c.text), c.ids, "special tokens on: \(c.text.debugDescription)")
            XCTAssertEqual(tokenizer.encode(text: c.text), c.ids_nospecial, "special tokens off: \(c.text.debugDescription)")
        }
    }

    func testDecodeOfEveryCaseGivesTheText() throws {
        let tokenizer = try defaultTokenizer()
        for c in try Self.loadCases() {
            XCTAssertEqual(Array(tokenizer.decode(c.ids).utf8), Array(c.text.utf8), c.text.debugDescription)
            XCTAssertEqual(Array(tokenizer.decode(c.ids_nospecial).utf8), Array(c.text.utf8), c.text.debugDescription)
        }
    }

    func testDescriptionMetadata() throws {
        let tokenizer = try defaultTokenizer()
        XCTAssertEqual(tokenizer.vocabularySize, 151936)
        XCTAssertEqual(tokenizer.preTokenizer, .qwen2)
        XCTAssertEqual(tokenizer.eosTokenId, 151645)
        XCTAssertEqual(tokenizer.id(forToken: "<|im_end|>"), 151645)
        XCTAssertEqual(Set(tokenizer.stopTokenIds(for: ChatTemplate(family: .chatML))), [151643, 151645])
    }
}
