// The KV snapshot files: what is saved is what is loaded (bytes and tokens), across a new store over
// the same folder; damage, truncation and foreign files are detected and deleted, never loaded;
// lookups see only the user's snapshots; a deleted conversation's files are gone; the budget holds.
import Foundation
import TestSupport
import XCTest

@testable import Transformer

final class KVSnapshotStoreTests: XCTestCase {
    private let layout = KVCacheLayout(layers: 2, kvHeads: 2, headDim: 8, blockSize: 4, precision: "float16")
    private var root = ""

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "kvs-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    private func store(model: String = "m1", budget: Int = 1 << 20) throws -> KVSnapshotStore {
        try KVSnapshotStore(root: root, model: model, layout: layout, budgetBytes: budget)
    }

    /// `blocks` blocks of seeded random bytes.
    private func payload(blocks: Int, seed: UInt64) -> (KVSnapshotPayload, [UInt8]) {
        var rng = SeededGenerator(seed: seed)
        let bytes = (0..<(blocks * layout.blockBytes)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let p = KVSnapshotPayload(byteCount: bytes.count)
        bytes.withUnsafeBytes { p.bytes.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return (p, bytes)
    }

    private func bytes(_ p: KVSnapshotPayload) -> [UInt8] { Array(UnsafeRawBufferPointer(start: p.bytes, count: p.count)) }

    private func files(_ s: KVSnapshotStore) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: s.directory)) ?? []).filter { $0.hasSuffix(".kvs") }
    }

    private let alice = KVSnapshotOwner(user: 1, conversation: "c-alice")
    private let tokens = Array(100..<112)  // 3 blocks

    func testSavedBlocksLoadIdenticallyAfterRestart() throws {
        let (p, expected) = payload(blocks: 3, seed: 1)
        let first = try store()
        first.save(owner: alice, tokens: tokens, payload: p)
        first.waitForWrites()

        let second = try store()  // a new process over the same folder
        XCTAssertEqual(second.statistics.files, 1)
        let prompt = tokens + [7, 8, 9, 10, 11]
        let match = try XCTUnwrap(second.bestMatch(user: 1, tokens: prompt, maxBlocks: 4))
        XCTAssertEqual(match.blocks, 3)
        let loaded = try XCTUnwrap(second.load(match, tokens: prompt))
        XCTAssertEqual(bytes(loaded), expected)

        // A prompt that diverges inside block 2 gets the first two blocks only.
        var diverging = prompt
        diverging[9] = 0
        let partial = try XCTUnwrap(second.bestMatch(user: 1, tokens: diverging, maxBlocks: 4))
        XCTAssertEqual(partial.blocks, 2)
        XCTAssertEqual(bytes(try XCTUnwrap(second.load(partial, tokens: diverging))), Array(expected[0..<(2 * layout.blockBytes)]))
    }

    func testAnotherUserNeverFindsTheSnapshot() throws {
        let s = try store()
        s.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 2).0)
        s.waitForWrites()
        XCTAssertNil(s.bestMatch(user: 2, tokens: tokens + [1], maxBlocks: 3))
        XCTAssertNotNil(s.bestMatch(user: 1, tokens: tokens + [1], maxBlocks: 3))
    }

    func testAFlippedByteInABlockIsDetectedAndTheFileDeleted() throws {
        let s = try store()
        s.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 3).0)
        s.waitForWrites()
        let path = s.directory + "/" + files(s)[0]
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[data.count - layout.blockBytes / 2] ^= 0x40  // inside the last block
        try data.write(to: URL(fileURLWithPath: path))

        let match = try XCTUnwrap(s.bestMatch(user: 1, tokens: tokens + [1], maxBlocks: 3))
        XCTAssertNil(s.load(match, tokens: tokens + [1]))
        s.waitForWrites()
        XCTAssertEqual(files(s), [])
        XCTAssertEqual(s.statistics.damaged, 1)
        XCTAssertNil(s.bestMatch(user: 1, tokens: tokens + [1], maxBlocks: 3))
    }

    func testDamagedTruncatedAndForeignFilesAreDeletedWhenOpened() throws {
        let s = try store()
        for (i, owner) in [alice, KVSnapshotOwner(user: 1, conversation: "b"), KVSnapshotOwner(user: 1, conversation: "c")].enumerated() {
            s.save(owner: owner, tokens: tokens.map { $0 + i }, payload: payload(blocks: 3, seed: UInt64(10 + i)).0)
        }
        s.waitForWrites()
        let names = files(s).sorted()
        XCTAssertEqual(names.count, 3)
        // One header byte flipped, one file cut short; the third stays whole.
        var header = try Data(contentsOf: URL(fileURLWithPath: s.directory + "/" + names[0]))
        header[30] ^= 0x01
        try header.write(to: URL(fileURLWithPath: s.directory + "/" + names[0]))
        let truncated = try Data(contentsOf: URL(fileURLWithPath: s.directory + "/" + names[1]))
        try truncated.prefix(truncated.count - 1).write(to: URL(fileURLWithPath: s.directory + "/" + names[1]))
        // A whole file of another model, put in this model's folder.
        let other = try store(model: "m2")
        other.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 20).0)
        other.waitForWrites()
        try FileManager.default.copyItem(atPath: other.directory + "/" + files(other)[0], toPath: s.directory + "/foreign.kvs")

        let reopened = try store()
        XCTAssertEqual(files(reopened), [names[2]])
        XCTAssertEqual(reopened.statistics.damaged, 3)
    }

    func testDeletingAConversationDeletesItsFilesAndItsLaterSaves() throws {
        let s = try store()
        s.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 4).0)
        let bob = KVSnapshotOwner(user: 2, conversation: "c-bob")
        s.save(owner: bob, tokens: tokens, payload: payload(blocks: 3, seed: 5).0)
        s.remove(owner: alice)
        XCTAssertNil(s.bestMatch(user: 1, tokens: tokens + [1], maxBlocks: 3))
        XCTAssertEqual(files(s).count, 1)
        s.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 6).0)  // a chain still in memory
        s.waitForWrites()
        XCTAssertEqual(files(s).count, 1)
        XCTAssertNotNil(s.bestMatch(user: 2, tokens: tokens + [1], maxBlocks: 3))
    }

    func testANewerChainOfAConversationReplacesTheOlder() throws {
        let s = try store()
        s.save(owner: alice, tokens: Array(tokens[0..<8]), payload: payload(blocks: 2, seed: 7).0)
        s.save(owner: alice, tokens: tokens, payload: payload(blocks: 3, seed: 8).0)
        s.waitForWrites()
        XCTAssertEqual(files(s).count, 1)
        XCTAssertEqual(s.bestMatch(user: 1, tokens: tokens + [1], maxBlocks: 3)?.blocks, 3)
    }

    func testTheBudgetEvictsTheLeastRecentlyUsed() throws {
        let owners = (0..<3).map { KVSnapshotOwner(user: 1, conversation: "c\($0)") }
        let chains = (0..<3).map { i in (0..<12).map { 1000 * (i + 1) + $0 } }
        // One file's size (all three have the same header length), from a probe under another model.
        let probe = try store(model: "probe")
        probe.save(owner: owners[0], tokens: chains[0], payload: payload(blocks: 3, seed: 29).0)
        probe.waitForWrites()
        let fileSize = probe.statistics.bytes
        XCTAssertGreaterThan(fileSize, 3 * layout.blockBytes)
        // Room for two snapshots, not three.
        let s = try store(budget: 2 * fileSize + fileSize / 2)
        s.save(owner: owners[0], tokens: chains[0], payload: payload(blocks: 3, seed: 30).0)
        s.save(owner: owners[1], tokens: chains[1], payload: payload(blocks: 3, seed: 31).0)
        s.waitForWrites()
        Thread.sleep(forTimeInterval: 0.01)
        // Using the first makes the second the least recently used.
        XCTAssertNotNil(s.load(try XCTUnwrap(s.bestMatch(user: 1, tokens: chains[0] + [1], maxBlocks: 3)), tokens: chains[0] + [1]))
        s.save(owner: owners[2], tokens: chains[2], payload: payload(blocks: 3, seed: 32).0)
        s.waitForWrites()
        XCTAssertEqual(files(s).count, 2)
        XCTAssertNil(s.bestMatch(user: 1, tokens: chains[1] + [1], maxBlocks: 3))
        XCTAssertNotNil(s.bestMatch(user: 1, tokens: chains[0] + [1], maxBlocks: 3))
        XCTAssertEqual(s.statistics.evictions, 1)
        XCTAssertLessThanOrEqual(s.statistics.bytes, s.budgetBytes)
    }
}
