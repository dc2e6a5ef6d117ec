// Blocks saved through a KV snapshot file and loaded into another cache give the logits of a fresh
// run (the reference: the whole prompt computed in a new cache), for every tiny model flavour;
// the saved chain is taken from the eviction hook, as the engine does.
import Foundation
import TestSupport
import XCTest

@testable import Transformer

final class KVSnapshotRoundTripTests: XCTestCase {
    func testLoadedBlocksGiveTheLogitsOfAFreshRun() throws {
        for flavour in Flavour.allCases {
            let root = NSTemporaryDirectory() + "kvs-roundtrip-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: root) }
            let tiny = try TinyModel(flavour)
            let history = randomTokens(14, vocab: 101, seed: 11)  // 3 full blocks of 4 and 2 more
            let prompt = history + randomTokens(7, vocab: 101, seed: 12)

            // Turn one in cache A; its chain saved when the pool evicts it.
            let a = try tiny.cache(blocks: 32, blockSize: 4)
            let store = try KVSnapshotStore(root: root, model: "tiny-\(flavour)", layout: a.layout, budgetBytes: 1 << 20)
            let owner = KVSnapshotOwner(user: 1, conversation: "c")
            let s = a.makeSequence()
            _ = try tiny.model.forward([SequenceInput(sequence: s, tokens: history, logits: .none)])
            a.publishFullBlocks(s)
            let chain = try XCTUnwrap(a.chain(of: s))
            XCTAssertEqual(chain.tokens, Array(history[0..<12]))
            a.release(s)
            var saved = 0
            a.willEvictBlock = { _ in
                guard saved == 0, a.isIntact(chain) else { return }
                let payload = KVSnapshotPayload(byteCount: chain.blockCount * a.blockBytes)
                a.copyBlocks(of: chain, to: payload.bytes)
                store.save(owner: owner, tokens: chain.tokens, payload: payload)
                saved += 1
            }
            a.evictCachedBlocks(keeping: 0)
            XCTAssertEqual(saved, 1)
            XCTAssertFalse(a.isIntact(chain), "evicted blocks are no longer the chain's")
            store.waitForWrites()

            // Turn two in cache B, a new store over the same folder: the blocks come from the file.
            let reopened = try KVSnapshotStore(root: root, model: "tiny-\(flavour)", layout: a.layout, budgetBytes: 1 << 20)
            let b = try tiny.cache(blocks: 32, blockSize: 4)
            let match = try XCTUnwrap(reopened.bestMatch(user: 1, tokens: prompt, maxBlocks: (prompt.count - 1) / 4))
            XCTAssertEqual(match.blocks, 3)
            let loaded = try XCTUnwrap(reopened.load(match, tokens: prompt))
            let t = b.makeSequence()
            try b.attachLoadedBlocks(t, tokens: prompt, blocks: loaded.bytes, count: match.blocks)
            XCTAssertEqual(t.tokens, Array(prompt[0..<12]))
            XCTAssertEqual(b.cachedPrefixBlocks(prompt), 3, "loaded blocks are registered for sharing")
            let logits = try tiny.model.forward([SequenceInput(sequence: t, tokens: Array(prompt[12...]), logits: .all)])
            let continued = (0..<(prompt.count - 12)).map { logits.array(row: $0) }
            let fresh = try chunkedLogits(tiny.model, cache: try tiny.cache(blocks: 32, blockSize: 4), tokens: prompt, chunks: [64])
            for i in 0..<(prompt.count - 12) {
                XCTAssertNil(mismatch(continued[i], fresh[12 + i], absolute: 1e-5, relative: 1e-4), "\(flavour) row \(i)")
            }
        }
    }
}
