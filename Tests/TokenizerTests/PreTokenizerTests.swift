import Foundation
import TestSupport
import Tokenizer
import XCTest

/// The hand-written scanners against the regular expressions they implement. The oracle is ICU's
/// regex engine (NSRegularExpression, tests only): both follow Unicode's categories and White_Space.
final class PreTokenizerTests: XCTestCase {
    func regexPieces(_ pattern: PreTokenizerPattern, _ text: String) throws -> [String] {
        let regex = try NSRegularExpression(pattern: pattern.regex)
        let ns = text as NSString
        return regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) }
    }

    func testScannersMatchTheirRegexOnRandomText() throws {
        for pattern in PreTokenizerPattern.allCases {
            var rng = SeededGenerator(seed: 21)
            var failures = 0
            for _ in 0..<1500 {
                let s = RandomText.string(&rng)
                let got = pattern.pieces(of: s)
                let expected = try regexPieces(pattern, s)
                if got.map({ Array($0.utf8) }) != expected.map({ Array($0.utf8) }) {
                    failures += 1
                    if failures <= 3 { XCTFail("\(pattern) on \(s.debugDescription):\n got \(got)\n regex \(expected)") }
                }
            }
            XCTAssertEqual(failures, 0, "\(pattern)")
        }
    }

    func testHandPickedSplits() {
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "Hello world!!\n\nok"), ["Hello", " world", "!!\n\n", "ok"])
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "12345"), ["1", "2", "3", "4", "5"])
        XCTAssertEqual(PreTokenizerPattern.llama3.pieces(of: "12345"), ["123", "45"])
        XCTAssertEqual(PreTokenizerPattern.gpt2.pieces(of: "x 12345"), ["x", " 12345"])
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "we'LL it's"), ["we", "'LL", " it", "'s"])
        XCTAssertEqual(PreTokenizerPattern.gpt2.pieces(of: "we'LL it's"), ["we", "'", "LL", " it", "'s"])
        // \s+(?!\S) leaves the last space to the next word; \s*[\r\n]+ ends at the last newline.
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "a   b"), ["a", "  ", " b"])
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "a \n \n  b"), ["a", " \n \n", " ", " b"])
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "end  "), ["end", "  "])
        // Scalars, not Characters: a combining mark is not a letter, an emoji with ZWJ is several scalars.
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "e\u{0301}t"), ["e", "\u{0301}t"])
        // Devanagari vowel signs (Mc) and virama (Mn) are not letters: each opens a new piece.
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "हिन्दी"), ["ह", "िन", "्द", "ी"])
        XCTAssertEqual(PreTokenizerPattern.qwen2.pieces(of: "👍🏽x"), ["👍🏽", "x"])
    }
}
