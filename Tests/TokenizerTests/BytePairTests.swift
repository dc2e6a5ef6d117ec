import TestSupport
import Tokenizer
import XCTest

/// The optimized byte-level BPE (pair table, linked list, heap for long words, word cache) against
/// the naive string-keyed reference, piece by piece on random text.
final class BytePairTests: XCTestCase {
    func testEncodeEqualsNaiveBPEOfEachPiece() throws {
        let tokenizer = try defaultTokenizer()
        let reference = try NaiveBPE.shared()
        var rng = SeededGenerator(seed: 11)
        for _ in 0..<1500 {
            let s = RandomText.string(&rng)
            let expected = PreTokenizerPattern.qwen2.pieces(of: s).flatMap { reference.encodeWord(Array($0.utf8)) }
            XCTAssertEqual(tokenizer.encode(text: s), expected, s.debugDescription)
        }
    }

    func testRepeatedWordsHitTheCacheWithTheSameResult() throws {
        let tokenizer = try defaultTokenizer()
        let reference = try NaiveBPE.shared()
        let text = String(repeating: "tokenization tokenizer tokens 你好 ", count: 50)
        let expected = PreTokenizerPattern.qwen2.pieces(of: text).flatMap { reference.encodeWord(Array($0.utf8)) }
        XCTAssertEqual(tokenizer.encode(text: text), expected)  // words 2...50 come from the cache
        XCTAssertEqual(tokenizer.encode(text: text), expected)  // all from the cache
    }

    func testLlama3IgnoresMergesForWholeVocabularyWords() throws {
        // Vocabulary: the 256 byte tokens, "ab" (merge "a b"), "abc" (reachable by no merge), "aa" (merge "a a").
        let tokens = NaiveBPE.byteLevelAlphabet + ["ab", "abc", "aa"]
        func tokenizer(_ pre: String) throws -> Tokenizer {
            try Tokenizer(
                description: TokenizerDescription(
                    kind: .byteLevelBPE, preTokenizer: pre, tokens: tokens,
                    tokenTypes: [Int](repeating: 1, count: tokens.count), merges: ["a b", "a a"]))
        }
        let a = Int(UInt8(ascii: "a")), c = Int(UInt8(ascii: "c"))
        XCTAssertEqual(try tokenizer("qwen2").encode(text: "abc"), [256, c])  // ab + c by merges
        XCTAssertEqual(try tokenizer("llama-bpe").encode(text: "abc"), [257])  // the word is a token
        XCTAssertEqual(try tokenizer("llama3").encode(text: "aab"), [a, 256])  // not a token: merges
        XCTAssertEqual(try tokenizer("gpt2").encode(text: "aaa"), [258, a])  // leftmost of equal ranks
    }
}
