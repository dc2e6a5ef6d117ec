import Tensor
import Transformer
import XCTest

/// A model with a `DraftVocabulary` gives, for the ids it keeps, the logits the whole output
/// projection gives (same rows, same kernels) and −∞ for every other id; in batches of several
/// entries and logit rows (the rows are spread in place) and on the GEMM path (9 rows and more).
final class DraftVocabularyTests: XCTestCase {
    func testKeptIdsMatchTheFullProjectionAndTheRestAreMinusInfinity() throws {
        for format in [WeightFormat.f32, .int8, .int4] {
            let tiny = try TinyModel(.qwen2, format: format)
            let V = tiny.configuration.vocabSize
            let vocabulary = try DraftVocabulary(head: 40, tail: 90..<97, vocabularySize: V)
            // Entries: 5 tokens with every row's logits, then one row each (7 rows); 12 more rows (GEMM).
            let batches: [[(tokens: [Int], logits: LogitsRequest)]] = [
                [(randomTokens(5, vocab: V, seed: 1), .all), (randomTokens(3, vocab: V, seed: 2), .last), ([7], .last)],
                [(randomTokens(12, vocab: V, seed: 3), .all), (randomTokens(4, vocab: V, seed: 4), .none)],
            ]
            for batch in batches {
                func run(_ restricted: DraftVocabulary?) throws -> [[Float]] {
                    tiny.model.draftVocabulary = restricted
                    defer { tiny.model.draftVocabulary = nil }
                    let cache = try tiny.cache()
                    let sequences = batch.map { _ in cache.makeSequence() }
                    let logits = try tiny.model.forward(
                        zip(sequences, batch).map { SequenceInput(sequence: $0, tokens: $1.tokens, logits: $1.logits) })
                    return (0..<logits.rowCount).map { logits.array(row: $0) }
                }
                let full = try run(nil), restricted = try run(vocabulary)
                XCTAssertEqual(full.count, restricted.count)
                for (r, (a, b)) in zip(full, restricted).enumerated() {
                    for id in 0..<V {
                        if id < 40 || (90..<97).contains(id) {
                            XCTAssertEqual(b[id], a[id], "\(format), row \(r), id \(id)")
                        } else {
                            XCTAssertEqual(b[id], -.infinity, "\(format), row \(r), id \(id) is outside the draft vocabulary")
                        }
                    }
                }
            }
        }
    }

    func testStandardVocabularyKeepsTheLeadingAndSpecialIds() throws {
        // A vocabulary padded past its tokens (151,936 ids, 151,665 tokens), specials from 151,643 and one low id.
        let v = try XCTUnwrap(DraftVocabulary.standard(vocabularySize: 151_936, tokenCount: 151_665, specialIds: [3, 151_643, 151_645]))
        XCTAssertEqual(v.head, DraftVocabulary.defaultHead)
        XCTAssertEqual(v.tail, 151_643..<151_665)
        // A vocabulary too small to gain keeps everything (nil); specials below the head need no tail.
        XCTAssertNil(DraftVocabulary.standard(vocabularySize: 32_000, tokenCount: 32_000, specialIds: [1, 2]))
        let noTail = try XCTUnwrap(DraftVocabulary.standard(vocabularySize: 200_000, tokenCount: 200_000, specialIds: [1, 2]))
        XCTAssertTrue(noTail.tail.isEmpty)
        XCTAssertThrowsError(try DraftVocabulary(head: 50, tail: 40..<60, vocabularySize: 101))
        XCTAssertThrowsError(try DraftVocabulary(head: 0, tail: 90..<97, vocabularySize: 101))
        XCTAssertThrowsError(try DraftVocabulary(head: 40, tail: 90..<102, vocabularySize: 101))
    }
}
