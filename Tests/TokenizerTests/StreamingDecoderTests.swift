import TestSupport
import Tokenizer
import XCTest

/// Streaming decode, one id at a time, must concatenate to the whole decode, and every piece it
/// returns must be complete text (no U+FFFD produced by cutting a character).
final class StreamingDecoderTests: XCTestCase {
    func streamed(_ tokenizer: Tokenizer, _ ids: [Int]) -> (String, [String]) {
        var decoder = tokenizer.makeStreamingDecoder()
        var parts = ids.map { decoder.append($0) }
        parts.append(decoder.finish())
        return (parts.joined(), parts)
    }

    func testEveryReferenceCase() throws {
        let tokenizer = try defaultTokenizer()
        for c in try ReferenceCaseTests.loadCases() {
            for ids in [c.ids, c.ids_nospecial] {
                let (text, parts) = streamed(tokenizer, ids)
                XCTAssertEqual(Array(text.utf8), Array(tokenizer.decode(ids).utf8), c.text.debugDescription)
                XCTAssertFalse(parts.contains { $0.unicodeScalars.contains("\u{FFFD}") }, c.text.debugDescription)
            }
        }
    }

    func testRandomTextHoldsSplitCharactersBack() throws {
        let tokenizer = try defaultTokenizer()
        var rng = SeededGenerator(seed: 31)
        for _ in 0..<1000 {
            let s = RandomText.string(&rng)
            let (text, parts) = streamed(tokenizer, tokenizer.encode(text: s))
            XCTAssertEqual(Array(text.utf8), Array(s.utf8))
            if !s.unicodeScalars.contains("\u{FFFD}") {
                XCTAssertFalse(parts.contains { $0.unicodeScalars.contains("\u{FFFD}") }, s.debugDescription)
            }
        }
    }

    func testRandomIdSequencesNeverCrashAndMatchWholeDecode() throws {
        // Arbitrary ids make arbitrary byte soup: invalid sequences, truncated characters at the end.
        let tokenizer = try defaultTokenizer()
        var rng = SeededGenerator(seed: 32)
        for _ in 0..<3000 {
            let ids = (0..<Int.random(in: 0...12, using: &rng)).map { _ in
                Int.random(in: 0..<8, using: &rng) == 0
                    ? Int.random(in: 0...255, using: &rng)  // Qwen2's single-byte tokens
                    : Int.random(in: -2..<(tokenizer.vocabularySize + 2), using: &rng)
            }
            let (text, _) = streamed(tokenizer, ids)
            XCTAssertEqual(Array(text.utf8), Array(tokenizer.decode(ids).utf8), "\(ids)")
        }
    }

    func testHoldsAMultibyteCharacterUntilComplete() throws {
        let tokenizer = try defaultTokenizer()
        // "😀" is F0 9F 98 80: feed it as four single-byte tokens.
        let spelling = try NaiveBPE.shared().byteToText
        let ids = "😀".utf8.map { b in tokenizer.id(forToken: spelling[Int(b)])! }
        var decoder = tokenizer.makeStreamingDecoder()
        XCTAssertEqual(decoder.append(ids[0]), "")
        XCTAssertEqual(decoder.append(ids[1]), "")
        XCTAssertEqual(decoder.append(ids[2]), "")
        XCTAssertEqual(decoder.append(ids[3]), "😀")
        // A truncated character at the end comes out as U+FFFD from finish().
        XCTAssertEqual(decoder.append(ids[0]), "")
        XCTAssertEqual(decoder.finish(), "\u{FFFD}")
    }
}
