import TestSupport
import Tokenizer
import XCTest

/// decode(encode(s)) == s byte for byte (String == would compare canonically equivalent strings
/// equal, hiding a lost combining mark, so the UTF-8 bytes are compared).
final class RoundTripTests: XCTestCase {
    func testRandomStringsRoundTrip() throws {
        let tokenizer = try defaultTokenizer()
        var rng = SeededGenerator(seed: 4)
        var failures = 0
        for _ in 0..<4000 {
            let s = RandomText.string(&rng)
            for ids in [tokenizer.encode(text: s), tokenizer.encodeTrusted(template: s)] {
                let back = tokenizer.decode(ids)
                if Array(back.utf8) != Array(s.utf8) {
                    failures += 1
                    if failures <= 5 { XCTFail("round trip of \(s.debugDescription) gave \(back.debugDescription)") }
                }
            }
        }
        XCTAssertEqual(failures, 0)
    }

    func testEmptyAndTinyInputs() throws {
        let tokenizer = try defaultTokenizer()
        XCTAssertEqual(tokenizer.encode(text: ""), [])
        XCTAssertEqual(tokenizer.decode([]), "")
        XCTAssertEqual(tokenizer.encode(text: " "), [220])
        XCTAssertEqual(tokenizer.encode(text: "\n"), [198])
    }

    func testLongRunsUseTheHeapPathCorrectly() throws {
        // A letter run is one pre-token; long ones go through the heap merge. Compare to the naive BPE.
        let tokenizer = try defaultTokenizer()
        let reference = try NaiveBPE.shared()
        var rng = SeededGenerator(seed: 9)
        let alphabets: [[Unicode.Scalar]] = [
            Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars),
            Array("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年".unicodeScalars),
            Array("абвгдежзийклмнопрстуфхцчшщыьэюя".unicodeScalars),
            Array("aaaaab".unicodeScalars),
        ]
        for _ in 0..<400 {
            let alphabet = alphabets.randomElement(using: &rng)!
            var word = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 1...300, using: &rng) { word.append(alphabet.randomElement(using: &rng)!) }
            let text = String(word)
            XCTAssertEqual(tokenizer.encode(text: text), reference.encodeWord(Array(text.utf8)), text)
        }
    }
}
