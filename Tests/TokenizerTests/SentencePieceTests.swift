import Foundation
import Tokenizer
import XCTest

/// SentencePiece BPE on a small vocabulary built here, with the expected pieces worked by hand.
final class SentencePieceTests: XCTestCase {
    /// ids: 0 <unk>, 1 <s>, 2 </s>, 3...258 <0x00>...<0xFF>, then the pieces below from 259.
    static let pieces: [(String, Float)] = [
        ("▁", -10), ("h", -10), ("e", -10), ("l", -10), ("o", -10), ("w", -10), ("r", -10), ("d", -10),
        ("ll", -1), ("he", -2), ("hell", -3), ("▁hell", -4), ("▁hello", -5), ("or", -2.5), ("▁w", -6),
        ("▁wor", -7), ("ld", -8),
    ]

    static func description(byteFallback: Bool = true, addSpacePrefix: Bool = true) -> TokenizerDescription {
        var tokens = ["<unk>", "<s>", "</s>"]
        var types = [2, 3, 3]
        var scores: [Float] = [0, 0, 0]
        if byteFallback {
            for b in 0..<256 {
                tokens.append(String(format: "<0x%02X>", b))
                types.append(6)
                scores.append(0)
            }
        }
        for (piece, score) in pieces {
            tokens.append(piece)
            types.append(1)
            scores.append(score)
        }
        return TokenizerDescription(
            kind: .sentencePiece, preTokenizer: "default", tokens: tokens, tokenTypes: types,
            scores: scores, bosTokenId: 1, eosTokenId: 2, unknownTokenId: 0,
            endOfTurnTokenIds: [2], addBosToken: true, addSpacePrefix: addSpacePrefix)
    }

    func pieceTexts(_ tokenizer: Tokenizer, _ ids: [Int]) -> [String] { ids.map { tokenizer.tokenText($0)! } }

    func testMergesByScore() throws {
        // "▁hello▁world": ll(-1), he(-2), or(-2.5), he+ll=hell(-3), ▁+hell(-4), ▁hell+o(-5), ▁w(-6),
        // ▁w+or=▁wor(-7), ld(-8); "▁wor"+"ld" is no piece.
        let tokenizer = try Tokenizer(description: Self.description())
        let ids = tokenizer.encode(text: "hello world")
        XCTAssertEqual(pieceTexts(tokenizer, ids), ["▁hello", "▁wor", "ld"])
        XCTAssertEqual(tokenizer.decode(ids), "hello world")
    }

    func testByteFallbackAndUnknown() throws {
        let tokenizer = try Tokenizer(description: Self.description())
        // "i", "!" and "é" (C3 A9) are not pieces: their UTF-8 bytes become <0xNN> tokens.
        let ids = tokenizer.encode(text: "hi! é")
        XCTAssertEqual(pieceTexts(tokenizer, ids), ["▁", "h", "<0x69>", "<0x21>", "▁", "<0xC3>", "<0xA9>"])
        XCTAssertEqual(tokenizer.decode(ids), "hi! é")

        // Without byte tokens each unknown character ("i", and "é" of two bytes) is one <unk>.
        let plain = try Tokenizer(description: Self.description(byteFallback: false))
        XCTAssertEqual(pieceTexts(plain, plain.encode(text: "hié")), ["▁", "h", "<unk>", "<unk>"])
    }

    func testLeftmostFirstAmongEqualScores() throws {
        let tokenizer = try Tokenizer(description: Self.description())
        XCTAssertEqual(pieceTexts(tokenizer, tokenizer.encode(text: "lll")), ["▁", "ll", "l"])
    }

    func testSpacePrefixBosAndSpecialTokens() throws {
        let noPrefix = try Tokenizer(description: Self.description(addSpacePrefix: false))
        XCTAssertEqual(pieceTexts(noPrefix, noPrefix.encode(text: "hello")), ["hell", "o"])

        let tokenizer = try Tokenizer(description: Self.description())
        XCTAssertEqual(tokenizer.encode(text: "hello", addBos: true).first, 1)
        // As llama.cpp: text after a special token gets the space prefix again.
        XCTAssertEqual(pieceTexts(tokenizer, tokenizer.encodeTrusted(template: "<s>hello</s>")), ["<s>", "▁hello", "</s>"])
        XCTAssertEqual(pieceTexts(tokenizer, tokenizer.encode(text: "<s>")), ["▁", "<0x3C>", "<0x73>", "<0x3E>"])
        // Decode drops only the first piece's space prefix.
        let ids = tokenizer.encode(text: "  hello")
        XCTAssertEqual(pieceTexts(tokenizer, ids), ["▁", "▁", "▁hello"])
        XCTAssertEqual(tokenizer.decode(ids), "  hello")
    }

    func testStreamingEqualsWholeDecode() throws {
        let tokenizer = try Tokenizer(description: Self.description())
        let ids = tokenizer.encode(text: "hello é world ☃ lll")
        var decoder = tokenizer.makeStreamingDecoder()
        let streamed = ids.map { decoder.append($0) }.joined() + decoder.finish()
        XCTAssertEqual(streamed, tokenizer.decode(ids))
        XCTAssertEqual(streamed, "hello é world ☃ lll")
    }
}
