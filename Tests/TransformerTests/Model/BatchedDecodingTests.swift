import Tensor
import TestSupport
import Transformer
import XCTest

/// One step over many sequences of different lengths equals each sequence run alone, and
/// sequences may join and leave between steps.
final class BatchedDecodingTests: XCTestCase {
    func testBatchedDecodingEqualsSeparateRuns() throws {
        for flavour in Flavour.allCases {
            let tiny = try TinyModel(flavour)
            let prompts = [5, 1, 12, 9].enumerated().map { randomTokens($1, vocab: 101, seed: UInt64(40 + $0)) }
            let steps = 6
            let continuations = prompts.indices.map { randomTokens(steps, vocab: 101, seed: UInt64(90 + $0)) }

            // Alone: prompt then one token at a time.
            var alone: [[[Float]]] = []
            for (p, c) in zip(prompts, continuations) {
                let cache = try tiny.cache()
                let all = try chunkedLogits(tiny.model, cache: cache, tokens: p + c, chunks: [p.count] + Array(repeating: 1, count: steps))
                alone.append(Array(all[(p.count - 1)...]))
            }

            // Together: prompts prefilled in one step (different lengths), then batched decode
            // steps; sequence 2 leaves after 3 steps and sequence 3 joins one step late.
            let cache = try tiny.cache()
            let sequences = prompts.map { _ in cache.makeSequence() }
            let first = try tiny.model.forward((0..<3).map { SequenceInput(sequence: sequences[$0], tokens: prompts[$0]) })
            for e in 0..<3 {
                XCTAssertNil(
                    mismatch(Array(first.last(entry: e)!), alone[e][0], absolute: 1e-5, relative: 1e-4), "\(flavour) seq \(e) prefill")
            }
            var position = [0, 0, 0, -1]
            for step in 0..<steps {
                var batch: [SequenceInput] = []
                var members: [Int] = []
                for s in 0..<4 {
                    if s == 3 && step == 0 {
                        batch.append(SequenceInput(sequence: sequences[3], tokens: prompts[3]))
                    } else if s == 2 && step >= 3 {
                        continue
                    } else {
                        batch.append(SequenceInput(sequence: sequences[s], tokens: [continuations[s][position[s]]]))
                    }
                    members.append(s)
                }
                let logits = try tiny.model.forward(batch)
                for (e, s) in members.enumerated() {
                    position[s] += 1
                    let expected = alone[s][position[s]]
                    XCTAssertNil(
                        mismatch(Array(logits.last(entry: e)!), expected, absolute: 1e-5, relative: 1e-4),
                        "\(flavour) step \(step) sequence \(s)")
                }
                if step == 2 { cache.release(sequences[2]) }
            }
            for s in sequences { cache.release(s) }
            XCTAssertEqual(cache.freeBlockCount, cache.blockCount)
        }
    }
}

final class KVCacheTests: XCTestCase {
    func testOutOfBlocksThrowsAndChangesNothing() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 3, blockSize: 4)  // 12 positions in all
        let a = cache.makeSequence(), b = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: a, tokens: randomTokens(6, vocab: 101, seed: 1))])
        XCTAssertEqual(cache.freeBlockCount, 1)
        XCTAssertThrowsError(
            try tiny.model.forward([
                SequenceInput(sequence: a, tokens: [1, 2, 3]),
                SequenceInput(sequence: b, tokens: [4, 5, 6]),
            ])
        ) { error in
            XCTAssertEqual(error as? InferenceError, .outOfCacheBlocks(needed: 2, free: 1, total: 3))
        }
        XCTAssertEqual(a.length, 6)
        XCTAssertEqual(b.length, 0)
        XCTAssertEqual(cache.freeBlockCount, 1)
        // The same step for one sequence fits.
        _ = try tiny.model.forward([SequenceInput(sequence: a, tokens: [1, 2, 3])])
        XCTAssertEqual(a.length, 9)
        cache.release(a)
        XCTAssertEqual(cache.freeBlockCount, 3)
    }

    func testContextLimitIsTheSmallerOfModelAndConfigured() throws {
        let tiny = try TinyModel(.llama, maxPositions: 16)
        XCTAssertEqual(try tiny.cache(contextLength: 100).contextLength, 16)
        let cache = try tiny.cache(contextLength: 10)
        XCTAssertEqual(cache.contextLength, 10)
        let s = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: s, tokens: Array(0..<8))])
        XCTAssertThrowsError(try tiny.model.forward([SequenceInput(sequence: s, tokens: [1, 2, 3])])) { error in
            XCTAssertEqual(error as? InferenceError, .contextLimitExceeded(sequenceLength: 8, adding: 3, limit: 10))
        }
        _ = try tiny.model.forward([SequenceInput(sequence: s, tokens: [1, 2])])
        XCTAssertEqual(s.length, 10)
    }

    func testBadBatchesThrow() throws {
        let tiny = try TinyModel(.llama)
        let cache = try tiny.cache()
        let s = cache.makeSequence()
        XCTAssertThrowsError(try tiny.model.forward([]))
        XCTAssertThrowsError(try tiny.model.forward([SequenceInput(sequence: s, tokens: [])]))
        XCTAssertThrowsError(try tiny.model.forward([SequenceInput(sequence: s, tokens: [101])])) { error in
            XCTAssertEqual(error as? InferenceError, .tokenOutOfRange(token: 101, vocabularySize: 101))
        }
        XCTAssertThrowsError(try tiny.model.forward([SequenceInput(sequence: s, tokens: [1]), SequenceInput(sequence: s, tokens: [2])]))
        XCTAssertEqual(s.length, 0)
        XCTAssertEqual(cache.freeBlockCount, cache.blockCount)
    }

    /// Truncating to a shared prefix and continuing equals running the new text from scratch.
    func testTruncateThenContinueEqualsFreshRun() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blockSize: 4)
        let prefix = randomTokens(10, vocab: 101, seed: 3), tailA = randomTokens(5, vocab: 101, seed: 4)
        let tailB = randomTokens(6, vocab: 101, seed: 5)
        let s = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: s, tokens: prefix + tailA, logits: .none)])
        let used = cache.usedBlockCount
        cache.truncate(s, to: 10)
        XCTAssertEqual(s.tokens, prefix)
        XCTAssertEqual(cache.usedBlockCount, used - 1)  // 15 -> 10 positions: 4 -> 3 blocks of 4
        let continued = try tiny.model.forward([SequenceInput(sequence: s, tokens: tailB, logits: .all)])
        let rows = (0..<tailB.count).map { continued.array(row: $0) }
        let fresh = try chunkedLogits(tiny.model, cache: cache, tokens: prefix + tailB, chunks: [16])
        for (i, row) in rows.enumerated() {
            XCTAssertNil(mismatch(row, fresh[10 + i], absolute: 1e-5, relative: 1e-4))
        }
    }

    func testMemoryBudgetSizesThePool() throws {
        let c = tinyConfiguration(.qwen2)
        let perPosition = KVCache.bytesPerPosition(c, precision: .float16)  // 2 layers × 2 × 1 kv head × 16 × 2 bytes
        XCTAssertEqual(perPosition, 128)
        let cache = try KVCache(configuration: c, memoryBudget: 128 * 16 * 10 + 5, precision: .float16, blockSize: 16)
        XCTAssertEqual(cache.blockCount, 10)
        XCTAssertThrowsError(try KVCache(configuration: c, memoryBudget: 100, precision: .float16, blockSize: 16))
        // A pool the address space cannot hold (2^20 blocks of 128 MiB), or with more blocks than
        // Int32 ids, is a clear error, not a crash.
        for (blocks, size) in [(1 << 20, 1 << 20), (1 << 40, 16)] {
            XCTAssertThrowsError(try KVCache(configuration: c, blockCount: blocks, precision: .float16, blockSize: size)) { error in
                guard case .invalidConfiguration(let message)? = error as? InferenceError else { return XCTFail("\(error)") }
                XCTAssertTrue(message.contains("KV cache"), message)
            }
        }
    }
}
