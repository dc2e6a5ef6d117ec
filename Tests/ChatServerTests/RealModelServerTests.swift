import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import TestSupport
import XCTest

/// End to end with the real default model over a real socket: the server with a Transformer engine,
/// a key, two turns in one conversation where the second answer needs the first (and starts after
/// the first turn's cached KV blocks: the history re-rendered and re-encoded gives the same
/// tokens), and the stored history afterwards.
final class RealModelServerTests: XCTestCase {
    func testTwoTurnConversationRemembersTheFirstTurn() async throws {
        let path = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("\(path) is missing: run tools/fetch-model default (tools/test does)")
            return
        }
        let engines = try await makeTransformerEngines(
            modelPaths: [path],
            settings: TransformerEngineSettings(contextLength: 1024, threads: 2, kvCacheBytes: 64 << 20))
        let database = try ChatDatabase()
        let store = GRDBChatStore(database: database)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let service = ChatService(
            catalog: EngineCatalog(engines: engines), store: store,
            configuration: ChatServerConfiguration(), logger: logger)
        let accounts = Accounts(store: store)
        let user = try await accounts.addUser(name: "priya")
        let key = try await accounts.issueKey(for: user, key: nil).key
        defer { for engine in engines { (engine as? TransformerChatEngine)?.shutdown() } }

        try await buildApplication(service, host: "127.0.0.1", port: 0).test(.live) { client in
            // Greedy and short, so the check is about memory of the first turn, not luck.
            let id = try await create(client, key: key, json: #"{"temperature": 0, "max_tokens": 48}"#)
            let first = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: key,
                json: #"{"content": "My name is Priya. Please remember it."}"#)
            XCTAssertEqual(first.status, .ok, first.text)
            let hitsBefore = Self.prefixCacheHits(model: engines[0].modelInfo.id)
            let second = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: key,
                json: #"{"content": "What is my name? Answer with the name only."}"#)
            XCTAssertEqual(second.status, .ok, second.text)
            // The first turn's prompt (system prompt, question: ~45 tokens) and reply fill at least
            // two 16-position blocks that the second turn resends.
            let reused = Self.prefixCacheHits(model: engines[0].modelInfo.id) - hitsBefore
            XCTAssertGreaterThanOrEqual(reused, 32, "the second turn should start after the cached first turn")

            let messages = try await store.messages(conversationId: id)
            XCTAssertEqual(messages.map(\.role), [.user, .assistant, .user, .assistant])
            XCTAssertEqual(messages.map(\.status), [.complete, .complete, .complete, .complete])
            XCTAssertEqual(messages[0].content, "My name is Priya. Please remember it.")
            XCTAssertFalse(messages[1].content.isEmpty, "the first reply is stored")
            XCTAssertTrue(messages[3].content.contains("Priya"), "the second reply uses the first turn: \(messages[3].content)")
        }
    }

    /// `sarvam_prefix_cache_hit_tokens_total` of `model` in the Prometheus text (0 before any hit).
    static func prefixCacheHits(model: String) -> Int {
        let prefix = "sarvam_prefix_cache_hit_tokens_total{model=\"\(model)\"} "
        let line = SarvamMetrics.render().split(separator: "\n").first { $0.hasPrefix(prefix) }
        return line.flatMap { Int(Double($0.dropFirst(prefix.count)) ?? 0) } ?? 0
    }
}
