// KV snapshots through the engine loop on the tiny model: a conversation's blocks, evicted from the
// pool, are saved; its next turn loads them and its greedy tokens equal a fresh recomputation
// (EngineFixture.alone, a separate cache); damage, another user and a deleted conversation all
// recompute; a new engine over the same folder (a restart) loads them too.
import Foundation
import Transformer
import XCTest

@testable import ChatServer

final class KVSnapshotEngineTests: XCTestCase {
    private var root = ""
    private var model: Model!

    override func setUpWithError() throws {
        SarvamMetrics.bootstrap()  // before the engines make their metric handles
        root = NSTemporaryDirectory() + "kvs-engine-" + UUID().uuidString
        model = try EngineFixture.model()
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    /// Nothing stays cached in the pool after a step: every ended chain is evicted (and saved) at once.
    private let settings = SchedulerSettings(
        maxRunningSequences: 4, interTokenLatencyTarget: nil, maxCachedPrefixBytes: 0, idleCachedPrefixBytes: 0)

    private func harness() throws -> SchedulerHarness {
        let store = try KVSnapshotStore(
            root: root, model: "tiny", layout: KVCacheLayout(layers: 2, kvHeads: 2, headDim: 16, blockSize: 4, precision: "float16"),
            budgetBytes: 1 << 24)
        return try SchedulerHarness(settings: settings, model: model, snapshotStore: store)
    }

    private func files(_ h: SchedulerHarness) -> [String] {
        let folder = h.scheduler.snapshotStore!.directory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".kvs") }.map { folder + "/" + $0 }
    }

    /// Steps until the request ends, sleeping briefly while it waits for a snapshot read; returns
    /// the prompt tokens it got from the cache and snapshots (its usage).
    @discardableResult
    private func run(_ h: SchedulerHarness, _ job: SchedulerJob) async throws -> Int {
        let stream = try h.scheduler.trySubmit(job)
        for _ in 0..<5000 {
            let report = h.scheduler.step()
            h.clock.advance(0.01)
            if h.scheduler.activeRequestCount == 0 { break }
            if !report.didWork { usleep(2000) }  // a snapshot is being read
        }
        XCTAssertEqual(h.scheduler.activeRequestCount, 0, "the request did not end")
        h.scheduler.snapshotStore?.waitForWrites()
        for try await event in stream {
            if case .finished(_, let usage) = event { return usage.cachedPromptTokens }
        }
        XCTFail("no finished event")
        return 0
    }

    private let firstPrompt = EngineFixture.prompt(41, seed: 11)
    private let extra = EngineFixture.prompt(13, seed: 12)

    /// Turn one of conversation "c1" of user 1; returns the second turn's prompt (history + reply + more).
    private func firstTurn(_ h: SchedulerHarness) async throws -> [Int] {
        try await run(h, h.job("t1", prompt: firstPrompt, maxTokens: 9, user: 1, conversation: "c1"))
        XCTAssertEqual(files(h).count, 1, "the evicted chain was not saved")
        return firstPrompt + h.log["t1"] + extra
    }

    private func reference(_ prompt: [Int]) throws -> [Int] {
        try EngineFixture.alone(model, prompt: prompt, maxTokens: 7)
    }

    func testTheNextTurnLoadsItsBlocksAndGeneratesTheSameTokens() async throws {
        let h = try harness()
        let second = try await firstTurn(h)
        let cached = try await run(h, h.job("t2", prompt: second, maxTokens: 7, user: 1, conversation: "c1"))
        // 41 + 9 tokens were fed in turn one (the last reply token never is): 49 → 12 full blocks.
        XCTAssertEqual(cached, 48)
        XCTAssertEqual(h.log["t2"], try reference(second))
        let model = h.scheduler.modelId, snapshots = "cache=\"kv_snapshot\""
        XCTAssertEqual(metricValue("sarvam_cache_hits_total", model: model, label: snapshots), 1)
        XCTAssertEqual(metricValue("sarvam_cache_misses_total", model: model, label: snapshots), 1, "turn one found nothing")
        // Turn two's chain (63 + 6 fed tokens: 17 blocks) replaced turn one's file.
        XCTAssertGreaterThan(metricValue("sarvam_cache_bytes", model: model, label: snapshots), Double(12 * h.cache.blockBytes))
    }

    func testANewEngineOverTheSameFolderLoadsThem() async throws {
        let second = try await firstTurn(try harness())
        let restarted = try harness()
        let cached = try await run(restarted, restarted.job("t2", prompt: second, maxTokens: 7, user: 1, conversation: "c1"))
        XCTAssertEqual(cached, 48)
        XCTAssertEqual(restarted.log["t2"], try reference(second))
    }

    func testACorruptedSnapshotIsDetectedAndRecomputed() async throws {
        let h = try harness()
        let second = try await firstTurn(h)
        let path = files(h)[0]
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[data.count - 100] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: path))
        let cached = try await run(h, h.job("t2", prompt: second, maxTokens: 7, user: 1, conversation: "c1"))
        XCTAssertEqual(cached, 0)
        XCTAssertEqual(h.log["t2"], try reference(second))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the damaged file was kept")
        XCTAssertEqual(h.scheduler.snapshotStore!.statistics.damaged, 1)
        let model = h.scheduler.modelId, snapshots = "cache=\"kv_snapshot\""
        XCTAssertEqual(metricValue("sarvam_cache_hits_total", model: model, label: snapshots), 0)
        XCTAssertEqual(metricValue("sarvam_cache_misses_total", model: model, label: snapshots), 2, "turn one, and the damaged load")
        XCTAssertEqual(metricValue("sarvam_cache_damaged_total", model: model, label: snapshots), 1)
    }

    func testAnotherUsersIdenticalConversationNeverLoadsIt() async throws {
        let h = try harness()
        let second = try await firstTurn(h)
        let cached = try await run(h, h.job("t2", prompt: second, maxTokens: 7, user: 2, conversation: "c2"))
        XCTAssertEqual(cached, 0)
        XCTAssertEqual(h.log["t2"], try reference(second))
        // User 2's own chain is saved beside user 1's (whose file is untouched).
        XCTAssertEqual(files(h).count, 2)
    }

    func testADeletedConversationsSnapshotsAreGone() async throws {
        let h = try harness()
        let second = try await firstTurn(h)
        h.scheduler.forgetConversation(userId: 1, conversationId: "c1")
        XCTAssertEqual(files(h), [])
        let cached = try await run(h, h.job("t2", prompt: second, maxTokens: 7, user: 1, conversation: "c1"))
        XCTAssertEqual(cached, 0)
        XCTAssertEqual(h.log["t2"], try reference(second))
        // The deleted conversation's new chain is not saved either.
        XCTAssertEqual(files(h), [])
    }
}
