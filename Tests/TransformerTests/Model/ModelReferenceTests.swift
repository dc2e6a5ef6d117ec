import Tensor
import TestSupport
import Transformer
import XCTest

/// The optimized forward pass (Float32 weights) against the plain reference, position by position.
final class ModelReferenceTests: XCTestCase {
    static let tokens = randomTokens(29, vocab: 101, seed: 7)

    private func check(
        _ flavour: Flavour, chunks: [Int], precision: KVCache.Precision = .float32,
        blockSize: Int = 4, relative: Float = 1e-4, tokens: [Int] = tokens,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let tiny = try TinyModel(flavour)
        let expected = tiny.reference.logits(tokens)
        let actual = try chunkedLogits(
            tiny.model, cache: try tiny.cache(precision: precision, blockSize: blockSize),
            tokens: tokens, chunks: chunks)
        XCTAssertEqual(actual.count, expected.count, file: file, line: line)
        for t in expected.indices {
            let scale = expected[t].map(abs).max()!
            if let m = mismatch(actual[t], expected[t], absolute: relative * scale, relative: relative) {
                XCTFail("\(flavour) chunks \(chunks) position \(t): \(m)", file: file, line: line)
                return
            }
        }
    }

    func testLlamaMatchesReferenceTokenByToken() throws { try check(.llama, chunks: [1]) }
    func testLlamaMatchesReferenceInChunksOf3() throws { try check(.llama, chunks: [3]) }
    func testLlamaMatchesReferenceInChunksOf7() throws { try check(.llama, chunks: [7]) }
    func testLlamaMatchesReferenceWholePrompt() throws { try check(.llama, chunks: [29]) }
    func testQwen2MatchesReferenceTokenByToken() throws { try check(.qwen2, chunks: [1]) }
    func testQwen2MatchesReferenceInChunksOf3() throws { try check(.qwen2, chunks: [3]) }
    func testQwen2MatchesReferenceInChunksOf7() throws { try check(.qwen2, chunks: [7]) }
    /// A prompt prefilled in one chunk, then decoded one token at a time.
    func testQwen2PrefillThenDecode() throws { try check(.qwen2, chunks: [20, 1]) }
    func testLlamaMixedChunksAndBlockSizes() throws {
        try check(.llama, chunks: [5, 1, 2, 13], blockSize: 1)
        try check(.llama, chunks: [7, 1], blockSize: 16)
    }
    /// 150 positions: several key tiles of attention (~64 positions: the running max and sum carry
    /// across tiles), several query tiles of 32 tokens per chunk, and a block size (5) that does not
    /// divide the key tile (tiles of 60 positions padded to 64).
    func testLongSequenceSpansSeveralAttentionTiles() throws {
        let long = randomTokens(150, vocab: 101, seed: 9)
        try check(.qwen2, chunks: [70, 1, 45, 34], blockSize: 5, tokens: long)
        try check(.llama, chunks: [150], blockSize: 16, tokens: long)
    }
    /// Float16 keys and values move logits by about the half-precision rounding of K and V.
    func testFloat16CacheStaysClose() throws {
        try check(.qwen2, chunks: [7, 1], precision: .float16, relative: 3e-3)
        try check(.llama, chunks: [3], precision: .float16, relative: 3e-3)
    }
}

/// Guards the reference comparison against being vacuous: a model whose RoPE layout differs from
/// the reference's must fail it.
final class ReferenceSensitivityTests: XCTestCase {
    func testWrongRopeLayoutIsDetected() throws {
        let tiny = try TinyModel(.llama)
        var other = tiny.configuration
        other.ropeLayout = .halves
        let wrong = ReferenceTransformer(c: other, w: tiny.tensors).logits(ModelReferenceTests.tokens)
        let actual = try chunkedLogits(tiny.model, cache: try tiny.cache(), tokens: ModelReferenceTests.tokens, chunks: [4])
        XCTAssertNil(mismatch(actual[0], wrong[0], absolute: 1e-4, relative: 1e-4), "position 0 has no rotation")
        XCTAssertNotNil(mismatch(actual.last!, wrong.last!, absolute: 1e-3, relative: 1e-3))
    }
}
