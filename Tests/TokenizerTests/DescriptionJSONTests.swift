import Foundation
import Tokenizer
import XCTest

/// The hand-written JSON reader against Foundation's JSONDecoder (the plain reference).
final class DescriptionJSONTests: XCTestCase {
    func testSmallDescriptionRoundTripsAndMatchesJSONDecoder() throws {
        let d = TokenizerDescription(
            kind: .sentencePiece, preTokenizer: "default",
            tokens: ["<unk>", "a\"b\\c", "\n\t\u{1}", "é😀", "▁x", ""], tokenTypes: [2, 1, 1, 1, 1, 1],
            merges: ["a b"], scores: [0, -1.5, 2e-7, -3, 4.25, 1e10],
            bosTokenId: 1, eosTokenId: nil, padTokenId: 0, unknownTokenId: 0,
            endOfTurnTokenIds: [2, 3], addBosToken: true, addSpacePrefix: false)
        let data = try JSONEncoder().encode(d)
        XCTAssertEqual(try TokenizerDescription.decodeJSON(data), d)
        XCTAssertEqual(try JSONDecoder().decode(TokenizerDescription.self, from: data), d)
        XCTAssertEqual(try TokenizerDescription.decodeJSON(d.encodeJSON()), d)
    }

    func testEscapesUnknownKeysAndDefaults() throws {
        let json = #"""
            { "kind": "bpe", "preTokenizer": "qwen2", "future": {"x": [1, 2.5, null, true, "s"]},
              "tokens": ["\u00e9", "\ud83d\ude00", "\/", "a\u0000b"], "tokenTypes": [1, 1, 1, 1], "bosTokenId": null }
            """#
        let d = try TokenizerDescription.decodeJSON(Data(json.utf8))
        XCTAssertEqual(d.tokens, ["é", "😀", "/", "a\u{0}b"])
        XCTAssertEqual(d.merges, [])
        XCTAssertNil(d.bosTokenId)
        XCTAssertTrue(d.addSpacePrefix)
        XCTAssertFalse(d.addBosToken)
    }

    func testErrorsSayWhatWasExpected() {
        XCTAssertThrowsError(try TokenizerDescription.decodeJSON(Data(#"{"kind": "bpe", "tokens": [1]}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("expected a string"), "\(error)")
        }
        XCTAssertThrowsError(try TokenizerDescription.decodeJSON(Data(#"{"kind": "bpe"}"#.utf8))) { error in
            XCTAssertTrue("\(error)".contains("preTokenizer absent"), "\(error)")
        }
        XCTAssertThrowsError(
            try Tokenizer(
                description: TokenizerDescription(
                    kind: .byteLevelBPE, preTokenizer: "nope",
                    tokens: ["a"], tokenTypes: [1]))
        ) { error in
            XCTAssertTrue("\(error)".contains("found 'nope'"), "\(error)")
        }
    }

    func testDefaultDescriptionRoundTrips() throws {
        let d = try defaultTokenizerDescription()
        XCTAssertEqual(try TokenizerDescription.decodeJSON(d.encodeJSON()), d)
    }
}
