// Drafts without a draft model ("prompt lookup decoding"; vLLM's and llama.cpp's n-gram
// speculation): the sequence's last n tokens are looked up earlier in the same sequence (prompt and
// reply so far), and the tokens that followed the match are the draft. Code edits, quoted text and
// repeated identifiers give long matches. It costs a backward scan, no forward pass, so the only
// price of a wrong draft is its verification rows.
import Foundation

public struct PromptLookup: Sendable, Equatable {
    /// The shortest suffix worth matching (1 token matches nearly everywhere and guesses badly).
    public var minimumMatch: Int
    /// Longer matches are preferred up to this length; past it they are equally good.
    public var maximumMatch: Int

    public init(minimumMatch: Int = 2, maximumMatch: Int = 4) {
        precondition(minimumMatch >= 1 && maximumMatch >= minimumMatch, "lookup match bounds must satisfy 1 <= minimum <= maximum")
        self.minimumMatch = minimumMatch
        self.maximumMatch = maximumMatch
    }

    /// Up to `count` tokens that followed the best earlier match of the end of `tokens`: the longest
    /// match (capped at `maximumMatch`), the most recent among equally long ones. Empty when no
    /// earlier place matches at least `minimumMatch` tokens.
    public func draft(after tokens: [Int], count: Int) -> [Int] {
        draftWithMatch(after: tokens, count: count).tokens
    }

    /// `draft(after:count:)` with the length of the match it came from (0 when none).
    public func draftWithMatch(after tokens: [Int], count: Int) -> (tokens: [Int], match: Int) {
        let n = tokens.count
        guard count > 0, n > minimumMatch else { return ([], 0) }
        var bestEnd = -1, bestLength = 0
        tokens.withUnsafeBufferPointer { t in
            let last = t[n - 1]
            // A candidate match ends at position e < n − 1 (so at least one token follows it).
            var e = n - 2
            while e >= minimumMatch - 1 {
                if t[e] == last {
                    var length = 1
                    while length < maximumMatch, e - length >= 0, t[e - length] == t[n - 1 - length] { length += 1 }
                    if length > bestLength {
                        bestLength = length
                        bestEnd = e
                        if length == maximumMatch { break }
                    }
                }
                e -= 1
            }
        }
        guard bestLength >= minimumMatch else { return ([], 0) }
        return (Array(tokens[(bestEnd + 1)..<min(n, bestEnd + 1 + count)]), bestLength)
    }
}
