import Foundation
import XCTest
import Tensor
import TestSupport
import ModelImport
import Transformer

/// The point of the q/k permutation: a tiny Llama imported from its Hugging Face folder (rows as
/// trained, RoPE on halves) and from the equivalent GGUF (rows permuted by llama.cpp, RoPE on
/// interleaved pairs) compute the same logits. Qwen2 (no permutation, halves both ways) likewise.
final class ForwardEquivalenceTests: XCTestCase {
    func logits(_ input: String, tokens: [Int], pool: ThreadPool) throws -> [[Float]] {
        let path = temporaryPath(UUID().uuidString + ".sarvam")
        _ = try Converter.convert(try Converter.load(input), to: path)
        let model = try Model(file: try WeightFile.open(path, verify: true), pool: pool)
        let cache = try model.makeCache(memoryBudget: 1 << 20, precision: .float32)
        let out = try model.forward([SequenceInput(sequence: cache.makeSequence(), tokens: tokens, logits: .all)])
        return (0..<out.rowCount).map { out.array(row: $0) }
    }

    func testHuggingFaceAndGGUFGiveTheSameLogits() throws {
        let pool = ThreadPool(threads: 1)
        for flavour in [TinyModelFixture.Flavour.llama, .qwen2] {
            let fixture = TinyModelFixture(flavour: flavour)
            let folder = temporaryPath("hf-forward-\(flavour)-\(UUID().uuidString)")
            try fixture.writeHuggingFace(to: folder)
            let gguf = temporaryPath("forward-\(flavour)-\(UUID().uuidString).gguf")
            try fixture.writeGGUF(to: gguf)
            let tokens = [6, 0, 1, 3, 4, 2, 7]
            let a = try logits(folder, tokens: tokens, pool: pool)
            let b = try logits(gguf, tokens: tokens, pool: pool)
            XCTAssertEqual(a.count, tokens.count)
            for (i, (x, y)) in zip(a, b).enumerated() {
                // Same numbers, summed in a different order inside each head: rounding-level differences only.
                XCTAssertNil(mismatch(x, y, absolute: 1e-4, relative: 1e-4), "\(flavour) position \(i)")
            }
            // And the positions matter (RoPE is really applied): logits differ from position to position.
            XCTAssertGreaterThan(maxAbsoluteDifference(a[1], a[2]), 1e-3)
            if flavour == .llama {
                // Negative control: a Llama GGUF without llama.cpp's permutation computes something else.
                let wrong = temporaryPath("forward-unpermuted-\(UUID().uuidString).gguf")
                try fixture.writeGGUF(to: wrong, permuteQK: false)
                let c = try logits(wrong, tokens: tokens, pool: pool)
                XCTAssertGreaterThan(maxAbsoluteDifference(a[3], c[3]), 1e-3, "the permutation must matter")
            }
        }
    }
}
