import Foundation
import TestSupport
@testable import Transformer
import XCTest

/// Full KV blocks shared between sequences with a common prefix: the logits of a sequence that
/// reuses cached blocks equal those of a fresh run, references are counted, eviction takes the least
/// recently released blocks first, and stale blocks are never matched.
final class PrefixCacheTests: XCTestCase {
    /// Processes `tokens` in a new sequence, registers its full blocks and releases it.
    private func cachePrefix(_ tiny: TinyModel, _ cache: KVCache, _ tokens: [Int]) throws {
        let s = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: s, tokens: tokens, logits: .none)])
        cache.publishFullBlocks(s)
        cache.release(s)
    }

    func testReusedPrefixGivesTheLogitsOfAFreshRun() throws {
        for flavour in Flavour.allCases {
            let tiny = try TinyModel(flavour)
            let cache = try tiny.cache(blocks: 32, blockSize: 4)
            let history = randomTokens(10, vocab: 101, seed: 1)
            let first = history + randomTokens(5, vocab: 101, seed: 2)  // turn 1: 3 full blocks
            let second = first + randomTokens(6, vocab: 101, seed: 3)  // turn 2 resends turn 1
            try cachePrefix(tiny, cache, first)
            XCTAssertEqual(cache.cachedBlockCount, 3, "15 positions = 3 full blocks of 4 cached")
            XCTAssertEqual(cache.freeBlockCount, cache.blockCount, "cached blocks count as free")

            let s = cache.makeSequence()
            XCTAssertEqual(cache.attachCachedPrefix(s, tokens: second), 12)
            XCTAssertEqual(s.tokens, Array(second[0..<12]))
            XCTAssertEqual(cache.cachedBlockCount, 0)
            XCTAssertEqual(cache.usedBlockCount, 3)
            let logits = try tiny.model.forward([SequenceInput(sequence: s, tokens: Array(second[12...]), logits: .all)])
            let continued = (0..<(second.count - 12)).map { logits.array(row: $0) }  // before the next forward reuses it
            cache.release(s)
            let fresh = try chunkedLogits(tiny.model, cache: try tiny.cache(blocks: 32, blockSize: 4), tokens: second, chunks: [64])
            for i in 0..<(second.count - 12) {
                XCTAssertNil(mismatch(continued[i], fresh[12 + i], absolute: 1e-5, relative: 1e-4), "\(flavour) row \(i)")
            }
            // A prompt that diverges inside the second block reuses only the first.
            let other = cache.makeSequence()
            XCTAssertEqual(cache.attachCachedPrefix(other, tokens: Array(history[0..<6]) + [100, 100, 100]), 4)
            cache.release(other)
        }
    }

    func testAtLeastTheLastTokenIsLeftToCompute() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 16, blockSize: 4)
        let prompt = randomTokens(8, vocab: 101, seed: 4)
        try cachePrefix(tiny, cache, prompt)
        let s = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(s, tokens: prompt), 4, "the same 8 tokens again: the last block is recomputed")
        cache.release(s)
        let one = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(one, tokens: [prompt[0]]), 0)
        XCTAssertEqual(cache.freeBlockCount, cache.blockCount)
    }

    func testSharedBlocksAreCountedAndSurviveOneRelease() throws {
        let tiny = try TinyModel(.llama)
        let cache = try tiny.cache(blocks: 16, blockSize: 4)
        let prefix = randomTokens(8, vocab: 101, seed: 5)
        try cachePrefix(tiny, cache, prefix + [7])
        let a = cache.makeSequence(), b = cache.makeSequence()
        let tailA = randomTokens(3, vocab: 101, seed: 6), tailB = randomTokens(5, vocab: 101, seed: 7)
        XCTAssertEqual(cache.attachCachedPrefix(a, tokens: prefix + tailA), 8)
        XCTAssertEqual(cache.attachCachedPrefix(b, tokens: prefix + tailB), 8)
        XCTAssertEqual(a.blocks, b.blocks, "both sequences hold the same two blocks")
        XCTAssertEqual(cache.usedBlockCount, 2)
        _ = try tiny.model.forward([SequenceInput(sequence: a, tokens: tailA, logits: .none)])
        cache.release(a)
        XCTAssertEqual(cache.usedBlockCount, 2, "b still holds the shared blocks")
        let logits = try tiny.model.forward([SequenceInput(sequence: b, tokens: tailB, logits: .all)])
        let continued = (0..<tailB.count).map { logits.array(row: $0) }
        let fresh = try chunkedLogits(tiny.model, cache: try tiny.cache(blocks: 16, blockSize: 4), tokens: prefix + tailB, chunks: [64])
        for i in 0..<tailB.count {
            XCTAssertNil(mismatch(continued[i], fresh[8 + i], absolute: 1e-5, relative: 1e-4), "row \(i)")
        }
        cache.release(b)
        XCTAssertEqual(cache.freeBlockCount, cache.blockCount)
    }

    func testSameContentComputedTwiceIsStoredOnce() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 16, blockSize: 4)
        let prompt = randomTokens(9, vocab: 101, seed: 8)
        let a = cache.makeSequence(), b = cache.makeSequence()
        _ = try tiny.model.forward([
            SequenceInput(sequence: a, tokens: prompt, logits: .none),
            SequenceInput(sequence: b, tokens: prompt, logits: .none),
        ])
        XCTAssertEqual(cache.usedBlockCount, 6)
        cache.publishFullBlocks(a)
        cache.publishFullBlocks(b)
        XCTAssertEqual(Array(b.blocks[0..<2]), Array(a.blocks[0..<2]), "b's full blocks are swapped for a's")
        XCTAssertEqual(cache.usedBlockCount, 4, "two full blocks shared, each sequence keeps its partial block")
        cache.release(a)
        cache.release(b)
        XCTAssertEqual(cache.cachedBlockCount, 2)
    }

    func testEvictionTakesTheLeastRecentlyReleasedDeepestBlocksFirst() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 8, blockSize: 4)
        let old = randomTokens(12, vocab: 101, seed: 9), recent = randomTokens(8, vocab: 101, seed: 10)
        try cachePrefix(tiny, cache, old + [1])  // 3 blocks
        try cachePrefix(tiny, cache, recent + [1])  // 2 blocks, released later
        XCTAssertEqual(cache.cachedBlockCount, 5)
        // A sequence needing 5 blocks takes the 3 free ones, then evicts the 2 oldest cached: the
        // last two blocks of `old` (a release returns a sequence's deepest block first).
        let big = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: big, tokens: randomTokens(20, vocab: 101, seed: 11), logits: .none)])
        XCTAssertEqual(cache.cachedBlockCount, 3)
        let probeOld = cache.makeSequence(), probeRecent = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(probeOld, tokens: old + [1]), 4, "only old's first block is left")
        XCTAssertEqual(cache.attachCachedPrefix(probeRecent, tokens: recent + [1]), 8)
        for s in [probeOld, probeRecent, big] { cache.release(s) }
        XCTAssertThrowsError(try tiny.model.forward([SequenceInput(sequence: big, tokens: randomTokens(40, vocab: 101, seed: 12))])) {
            error in
            XCTAssertEqual(error as? InferenceError, .outOfCacheBlocks(needed: 10, free: 8, total: 8))
        }
    }

    func testAnEvictedBlocksSuccessorsAreNeverMatched() {
        var index = KVPrefixIndex(blockCount: 4)
        let first = PrefixKey(parent: 0, tokens: [1, 2])
        index.register(0, key: first)
        let second = PrefixKey(parent: index.nodes[0], tokens: [3, 4])
        index.register(1, key: second)
        index.cache(1)
        index.cache(0)
        XCTAssertEqual(index.evictOldest(), 1)
        XCTAssertEqual(index.evictOldest(), 0)
        XCTAssertNil(index.evictOldest())
        // Block 0's storage comes back with the same first tokens, block 1 is registered again...
        index.register(2, key: first)
        index.register(3, key: PrefixKey(parent: 0, tokens: [9, 9]))
        // ...but a successor registered under the old node would never be found under the new one.
        XCTAssertNotEqual(index.nodes[2], second.parent, "nodes are never reused")
        XCTAssertNil(index.lookup(PrefixKey(parent: index.nodes[2], tokens: [3, 4])))
        XCTAssertEqual(index.lookup(first), 2)
    }

    func testTruncatingInsideASharedBlockKeepsWholeBlocks() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 16, blockSize: 4)
        let prompt = randomTokens(12, vocab: 101, seed: 13)
        let a = cache.makeSequence()
        _ = try tiny.model.forward([SequenceInput(sequence: a, tokens: prompt, logits: .none)])
        cache.publishFullBlocks(a)
        let b = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(b, tokens: prompt + [5]), 12)
        XCTAssertEqual(cache.truncate(b, to: 10), 8, "block 2 is shared with a: b keeps two whole blocks")
        cache.release(b)
        XCTAssertEqual(cache.truncate(a, to: 10), 10, "a alone holds block 2: it keeps 10 positions")
        _ = try tiny.model.forward([SequenceInput(sequence: a, tokens: [1, 2], logits: .none)])
        cache.publishFullBlocks(a)
        let c = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(c, tokens: prompt + [5]), 8, "the rewritten block no longer matches the old tokens")
        let d = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(d, tokens: Array(prompt[0..<10]) + [1, 2, 5]), 12, "it matches its new tokens")
        for s in [a, c, d] { cache.release(s) }
    }

    func testReleasingUnusedMemoryKeepsTheNewestCachedBlocksAndZeroesTheRest() throws {
        let tiny = try TinyModel(.qwen2)
        let cache = try tiny.cache(blocks: 64, blockSize: 4)
        let kept = randomTokens(9, vocab: 101, seed: 14)
        try cachePrefix(tiny, cache, randomTokens(200, vocab: 101, seed: 15))
        try cachePrefix(tiny, cache, kept)
        XCTAssertEqual(cache.cachedBlockCount, 52)
        cache.releaseUnusedMemory(keepingCachedBlocks: 2)
        XCTAssertEqual(cache.cachedBlockCount, 2)
        XCTAssertEqual(cache.freeBlockCount, cache.blockCount)
        // The pages of the released blocks read as zeros again (given back); the kept ones do not.
        let bytes = UnsafeRawBufferPointer(start: cache.storage, count: cache.bytes)
        let s = cache.makeSequence()
        XCTAssertEqual(cache.attachCachedPrefix(s, tokens: kept), 8)
        let perBlock = cache.bytes / cache.blockCount
        let keptBlocks = Set(s.blocks.map(Int.init))
        var nonZeroOutsideKept = 0
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        for p in stride(from: 0, to: cache.bytes, by: page) {
            let blocksOfPage = Set((p / perBlock)...((min(p + page, cache.bytes) - 1) / perBlock))
            if !blocksOfPage.isDisjoint(with: keptBlocks) { continue }
            if bytes[p..<min(p + page, cache.bytes)].contains(where: { $0 != 0 }) { nonZeroOutsideKept += 1 }
        }
        XCTAssertEqual(nonZeroOutsideKept, 0, "pages of released blocks should be given back")
        XCTAssertTrue(s.blocks.contains { b in bytes[(Int(b) * perBlock)..<((Int(b) + 1) * perBlock)].contains { $0 != 0 } })
        cache.release(s)
    }
}
