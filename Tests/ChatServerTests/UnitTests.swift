import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest
@testable import ChatServer

extension Data {
    var hex: String { map { String(format: "%02x", $0) }.joined() }
}

final class SHA256Tests: XCTestCase {
    func testFIPSVectors() {
        // FIPS 180-4 examples (csrc.nist.gov SHA256.pdf) and the empty string.
        XCTAssertEqual(SHA256.hash("abc").hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hash("").hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(
            SHA256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex,
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(
            SHA256.hash(String(repeating: "a", count: 1_000_000)).hex,
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testConstantTimeEquals() {
        XCTAssertTrue(constantTimeEquals(Data([1, 2, 3]), Data([1, 2, 3])))
        XCTAssertFalse(constantTimeEquals(Data([1, 2, 3]), Data([1, 2, 4])))
        XCTAssertFalse(constantTimeEquals(Data([1, 2]), Data([1, 2, 3])))
    }
}

final class StopSequenceMatcherTests: XCTestCase {
    func run(_ pieces: [String], _ stops: [String]) -> (String, Bool) {
        var matcher = StopSequenceMatcher(stops)
        var out = ""
        for piece in pieces {
            let (emit, matched) = matcher.feed(piece)
            out += emit
            if matched { return (out, true) }
        }
        return (out + matcher.flush(), false)
    }

    func testStopSplitAcrossDeltas() {
        XCTAssertEqual(run(["Hello <", "|e", "nd|> more"], ["<|end|>"]).0, "Hello ")
        XCTAssertEqual(run(["Hello <", "|e", "nd|> more"], ["<|end|>"]).1, true)
        XCTAssertEqual(run(["a<b", "c"], ["<x"]).0, "a<bc")
        XCTAssertEqual(run(["ab"], []).0, "ab")
        XCTAssertEqual(run(["one\n\nUser:", " hi"], ["\n\nUser:", "###"]).0, "one")
        // Held-back text that never becomes a stop is flushed at the end.
        XCTAssertEqual(run(["tail <|e"], ["<|end|>"]).0, "tail <|e")
        XCTAssertEqual(run(["tail <|e"], ["<|end|>"]).1, false)
    }

    func testRandomSplitsAgreeWithWholeText() {
        var rng = SystemRandomNumberGenerator()
        let text = "The quick brown fox STOP jumps over the lazy dog"
        for _ in 0..<200 {
            var pieces: [String] = []
            var rest = Substring(text)
            while !rest.isEmpty {
                let n = Int.random(in: 1...5, using: &rng)
                pieces.append(String(rest.prefix(n)))
                rest = rest.dropFirst(n)
            }
            XCTAssertEqual(run(pieces, ["STOP", "lazy"]).0, "The quick brown fox ")
        }
    }
}

final class FormattingTests: XCTestCase {
    func testTitles() {
        XCTAssertEqual(ConversationTitle.from(firstMessage: "  Hello\n\nworld  "), "Hello world")
        XCTAssertEqual(ConversationTitle.from(firstMessage: "   "), ConversationTitle.placeholder)
        let long = ConversationTitle.from(firstMessage: String(repeating: "word ", count: 30))
        XCTAssertLessThanOrEqual(long.count, ConversationTitle.maxLength)
        XCTAssertTrue(long.hasSuffix("…"))
    }

    /// Model text with quotes, backslashes, control characters and line separators stays one SSE
    /// `data:` line and reads back unchanged.
    func testSSEDataEscaping() throws {
        let text = "quote\" back\\ nl\n cr\r tab\t ctl\u{01} ls\u{2028} </script> é 🙂"
        let frame = try SSE.event("delta", ReplyEvent.Delta(content: text))
        XCTAssertTrue(frame.hasPrefix("event: delta\ndata: {"), frame)
        XCTAssertTrue(frame.hasSuffix("}\n\n"), frame)
        let data = try XCTUnwrap(parseSSE(frame).first?.data)
        XCTAssertFalse(data.contains("\n") || data.contains("\r"), "one line: \(data)")
        let parsed = try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
        XCTAssertEqual(parsed?["content"] as? String, text)
    }
}
