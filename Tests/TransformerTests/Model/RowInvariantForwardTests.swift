import Tensor
import TestSupport
import Transformer
import XCTest

/// A forward step of up to `QuantKernels.rowInvariantRows` new tokens gives, row for row, bitwise the
/// logits of one-token steps (what speculative verification relies on for exact temperature-0
/// output): the kernels compute each row alone (RowInvarianceTests) and attention walks each row
/// over the same key tiles in the same order whatever rows are beside it. The rows here cross a key
/// tile (64 positions) and read a float16 cache, as served models do.
final class RowInvariantForwardTests: XCTestCase {
    func testStepOfSeveralTokensEqualsOneTokenSteps() throws {
        let rows = QuantKernels.rowInvariantRows
        for flavour in Flavour.allCases {
            for format in [WeightFormat.f32, .int8, .int5, .int4] {
                let tiny = try TinyModel(flavour, format: format)
                let tokens = randomTokens(60 + rows, vocab: 101, seed: 7)
                let alone = try chunkedLogits(
                    tiny.model, cache: try tiny.cache(precision: .float16), tokens: tokens,
                    chunks: [60] + Array(repeating: 1, count: rows))
                for split in [[rows], [3, rows - 3]] {
                    let together = try chunkedLogits(
                        tiny.model, cache: try tiny.cache(precision: .float16), tokens: tokens, chunks: [60] + split)
                    for p in 60..<tokens.count {
                        if let v = together[p].indices.first(where: { together[p][$0].bitPattern != alone[p][$0].bitPattern }) {
                            XCTFail(
                                "\(flavour) \(format), steps of \(split): position \(p), logit \(v) is \(together[p][v]), "
                                    + "one-token steps give \(alone[p][v])")
                        }
                    }
                }
            }
        }
    }
}
