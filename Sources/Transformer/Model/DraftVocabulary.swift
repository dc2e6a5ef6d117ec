// The logits a draft model computes: a prefix of the vocabulary and its special tokens.
//
// Why: a draft only proposes tokens; the target's verification decides every one (at temperature 0
// by agreement, above it by rejection sampling, which stays exact for any proposal distribution q,
// also one with no mass on most ids). The output head is the draft's largest matrix (the 0.5B
// model's: 151,936 × 896 in int8, 145 of the 398 MB a draft token reads), yet what a coder model
// writes comes almost always from the first ids of a BPE vocabulary, which lists its pieces in
// merge order (frequent first). Computing only those rows makes each draft token cheaper; a token
// outside is never proposed, and the target then writes it itself (measured in docs/engine.md).
import Tensor

/// Token ids whose logits a model computes: `0 ..< head` and `tail` (the special tokens that end a
/// turn, placed after the ordinary pieces); every other id's logit comes out as −∞.
public struct DraftVocabulary: Sendable, Equatable {
    public let head: Int
    public let tail: Range<Int>

    /// `tail` must lie past `head` within the vocabulary (or be empty).
    public init(head: Int, tail: Range<Int>, vocabularySize: Int) throws {
        guard head > 0, head <= vocabularySize else {
            throw InferenceError.invalidConfiguration("a draft vocabulary needs 1...\(vocabularySize) leading ids, got \(head)")
        }
        guard tail.isEmpty || (tail.lowerBound >= head && tail.upperBound <= vocabularySize) else {
            throw InferenceError.invalidConfiguration(
                "the draft vocabulary's special ids \(tail) must lie between \(head) and \(vocabularySize)")
        }
        self.head = head
        self.tail = tail.isEmpty ? head..<head : tail
    }

    /// Leading ids kept by default: on the code prompts of `bench generate --draft` the 0.5B
    /// draft kept its acceptance rate with 65,536 (it fell with 32,768 and 16,384; docs/engine.md).
    public static let defaultHead = 65536

    /// The default for a vocabulary of `vocabularySize` ids whose special tokens are `specialIds`
    /// (beginning/end of text, end of turn): the leading `defaultHead` ids, and the ids from the
    /// first special one past them up to `tokenCount` (the tokenizer's size; the model's vocabulary
    /// may be padded past it). nil when that would keep (nearly) everything.
    public static func standard(vocabularySize: Int, tokenCount: Int, specialIds: [Int]) -> DraftVocabulary? {
        let head = defaultHead
        guard vocabularySize > 2 * head else { return nil }
        let end = min(max(tokenCount, specialIds.max().map { $0 + 1 } ?? 0), vocabularySize)
        let start = specialIds.filter { $0 >= head }.min() ?? end
        return try? DraftVocabulary(head: head, tail: start..<max(start, end), vocabularySize: vocabularySize)
    }
}

extension Model {
    /// The output projection restricted to `vocabulary`: [R, V] logits with −∞ outside it. The
    /// head's rows are computed into the start of `logits` as [R, head], then spread to their rows
    /// from the last to the first (each row moves forward, never over a row not yet moved).
    func restrictedLogits(
        _ vocabulary: DraftVocabulary, input: UnsafeMutablePointer<Float>, rows R: Int, logits: UnsafeMutablePointer<Float>
    ) {
        let V = configuration.vocabSize, head = vocabulary.head, tail = vocabulary.tail
        let output = weights.output
        let headRows = QuantizedMatrix(format: output.format, rows: head, cols: output.cols, data: output.data, owner: output.owner)
        quantizedMatmul(headRows, input, m: R, logits, pool: pool)
        // The special ids' logits [R, tail] beside, on the stack for the usual few rows.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, R * tail.count)) { buffer in
            let tailLogits = buffer.baseAddress!
            if !tail.isEmpty {
                let tailRows = QuantizedMatrix(
                    format: output.format, rows: tail.count, cols: output.cols, data: output.rowPointer(tail.lowerBound),
                    owner: output.owner)
                quantizedMatmul(tailRows, input, m: R, tailLogits, pool: pool)
            }
            for r in stride(from: R - 1, through: 0, by: -1) {
                let row = logits + r * V
                if r > 0 { UnsafeMutableRawPointer(row).copyMemory(from: logits + r * head, byteCount: head * MemoryLayout<Float>.size) }
                (row + head).update(repeating: -.infinity, count: V - head)
                (row + tail.lowerBound).update(from: tailLogits + r * tail.count, count: tail.count)
            }
        }
    }
}
