// Prompt lookup drafts against a brute-force reference written here: for each match length from
// the longest allowed down, every earlier place the sequence's last tokens occur, newest first.
import Transformer
import XCTest

final class PromptLookupTests: XCTestCase {
    /// The reference: the longest n in max...min whose last-n suffix occurs ending before the last
    /// token, the newest such place, and the up-to-`count` tokens after it.
    static func reference(_ t: [Int], count: Int, minimum: Int, maximum: Int) -> [Int] {
        guard count > 0 else { return [] }
        for n in stride(from: maximum, through: minimum, by: -1) where t.count > n {
            let suffix = Array(t[(t.count - n)...])
            for end in stride(from: t.count - 2, through: n - 1, by: -1) where Array(t[(end - n + 1)...end]) == suffix {
                return Array(t[(end + 1)..<min(t.count, end + 1 + count)])
            }
        }
        return []
    }

    func testHandExamples() {
        let lookup = PromptLookup(minimumMatch: 2, maximumMatch: 4)
        // "a b c d … a b" → after the earlier "a b": "c d x".
        XCTAssertEqual(lookup.draft(after: [1, 2, 3, 4, 9, 1, 2], count: 3), [3, 4, 9])
        // The longer match wins over a newer shorter one: "7 1 2" occurs once, "1 2" twice.
        XCTAssertEqual(lookup.draft(after: [7, 1, 2, 5, 6, 1, 2, 8, 7, 1, 2], count: 2), [5, 6])
        // Among equally long matches the newest.
        XCTAssertEqual(lookup.draft(after: [1, 2, 5, 1, 2, 6, 1, 2], count: 1), [6])
        // One token of match is not enough; nothing earlier matches.
        XCTAssertEqual(lookup.draft(after: [4, 5, 6, 2], count: 3), [])
        XCTAssertEqual(lookup.draft(after: [1, 2], count: 3), [])
        // A repeating run continues itself, and the draft stops at the sequence's end.
        XCTAssertEqual(lookup.draft(after: [3, 3, 3, 3], count: 5), [3])
        XCTAssertEqual(lookup.draft(after: [1, 2, 3, 1, 2], count: 0), [])
        XCTAssertEqual(lookup.draftWithMatch(after: [9, 1, 2, 3, 4, 0, 9, 1, 2, 3, 4], count: 1).match, 4)
    }

    func testRandomSequencesMatchTheReference() {
        var seed: UInt64 = 0x1234_5678
        func next(_ bound: Int) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((seed >> 33) % UInt64(bound))
        }
        for trial in 0..<3000 {
            let vocabulary = 2 + trial % 5, length = next(40)
            let tokens = (0..<length).map { _ in next(vocabulary) }
            let minimum = 1 + trial % 3, maximum = minimum + trial % 4, count = next(6)
            let lookup = PromptLookup(minimumMatch: minimum, maximumMatch: maximum)
            XCTAssertEqual(
                lookup.draft(after: tokens, count: count), Self.reference(tokens, count: count, minimum: minimum, maximum: maximum),
                "\(tokens) min \(minimum) max \(maximum) count \(count)")
        }
    }
}
