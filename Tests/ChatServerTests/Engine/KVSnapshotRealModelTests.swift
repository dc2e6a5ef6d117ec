// KV snapshots on the default model: a conversation's second turn with its history loaded from disk
// (same engine, and a new engine over the same folder) streams exactly the greedy text of an engine
// that recomputes the history (snapshots off).
import Foundation
import TestSupport
import Transformer
import XCTest

@testable import ChatServer

private typealias ChatMessage = ChatServer::ChatMessage

final class KVSnapshotRealModelTests: XCTestCase {
    private var root = ""

    override func setUp() { root = NSTemporaryDirectory() + "kvs-real-" + UUID().uuidString }
    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    private func engine(snapshots: Bool) throws -> TransformerChatEngine {
        let path = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("\(path) is missing: run tools/fetch-model default (tools/test does)")
        }
        // No latency target: the warm-up skips its measurements. Nothing stays cached in the pool,
        // so every ended conversation is saved at once and its next turn must come from disk.
        let scheduler = SchedulerSettings(interTokenLatencyTarget: nil, maxCachedPrefixBytes: 0, idleCachedPrefixBytes: 0)
        return try loadTransformerEngine(
            path: path,
            settings: TransformerEngineSettings(
                contextLength: 1024, threads: 2, kvCacheBytes: 64 << 20, scheduler: scheduler,
                snapshotDirectory: snapshots ? root : nil))
    }

    /// The greedy reply's text and the prompt tokens that came from caches.
    private func reply(_ engine: TransformerChatEngine, _ messages: [ChatMessage]) async throws -> (text: String, cached: Int) {
        let request = GenerationRequest(
            messages: messages, maxTokens: 24, sampling: SamplingParameters(temperature: 0), userId: 7, conversationId: "conv")
        var text = ""
        var cached = -1
        for try await event in try engine.startGeneration(request) {
            switch event {
            case .text(let t, _): text += t
            case .finished(_, let usage): cached = usage.cachedPromptTokens
            case .promptProcessed, .logprobs: break
            }
        }
        engine.scheduler.snapshotStore?.waitForWrites()
        return (text, cached)
    }

    func testGreedyRepliesFromLoadedBlocksEqualRecomputedOnes() async throws {
        let history = (1...12).map { "Line \($0): the quick brown fox jumps over the lazy dog while the \($0)th bell rings." }
        var messages = [
            ChatMessage(role: .system, content: "You are a careful assistant."),
            ChatMessage(role: .user, content: "Remember these lines:\n" + history.joined(separator: "\n") + "\nWhat animal jumps?"),
        ]
        let saving = try engine(snapshots: true)
        let first = try await reply(saving, messages)
        XCTAssertFalse(first.text.isEmpty)
        messages += [
            ChatMessage(role: .assistant, content: first.text), ChatMessage(role: .user, content: "Which line mentions the 5th bell?"),
        ]
        let promptTokens = saving.promptTokens(messages).count
        XCTAssertGreaterThan(promptTokens, 200)

        let fromDisk = try await reply(saving, messages)
        saving.close()

        let recomputing = try engine(snapshots: false)
        let recomputed = try await reply(recomputing, messages)
        recomputing.close()

        let restarted = try engine(snapshots: true)
        let afterRestart = try await reply(restarted, messages)
        restarted.close()

        XCTAssertEqual(recomputed.cached, 0)
        // The history up to the first reply's last block comes from disk.
        XCTAssertGreaterThan(fromDisk.cached, promptTokens / 2)
        XCTAssertGreaterThan(afterRestart.cached, promptTokens / 2)
        XCTAssertFalse(recomputed.text.isEmpty)
        XCTAssertEqual(fromDisk.text, recomputed.text)
        XCTAssertEqual(afterRestart.text, recomputed.text)
    }
}
