import Foundation
import GRDB
import TestSupport
import XCTest

@testable import ChatServer

#if canImport(Glibc)
import Glibc
#endif

/// No lost data when the server dies: the real `sarvam serve` with the default model streams a
/// long reply and is killed with SIGKILL mid-stream (while the client still listens, so nothing in
/// the process gets to write a final status). The store, reopened, holds the user's message and
/// the reply up to its last flush, marked interrupted; the SQLite file passes `integrity_check`.
final class KilledServerTests: XCTestCase {
    func testSQLiteKeepsUserMessageAndInterruptedReply() async throws {
        let location = try StoreEngine.sqlite.freshLocation(self)
        guard case .sqlite(let path) = location else { return XCTFail("not SQLite") }
        try await killMidStreamAndCheck(location: location, storeArgument: "sqlite:\(path)")
        let queue = try DatabaseQueue(path: path)
        let integrity = try await queue.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
        XCTAssertEqual(integrity, ["ok"])
        try queue.close()
    }

    func testPostgresKeepsUserMessageAndInterruptedReply() async throws {
        let url = try PostgresTestServer.shared().freshDatabase()
        try await killMidStreamAndCheck(location: try StoreLocation(parsing: url), storeArgument: url)
    }

    func killMidStreamAndCheck(location: StoreLocation, storeArgument: String) async throws {
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            return XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
        }
        let adminKey = "sk-sarvam-test-admin-\(UUID().uuidString.prefix(8))"
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-killed-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: data) }
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let server = try ServerProcess(
            arguments: ["--model", model, "--store", storeArgument, "--context", "1024", "--threads", "2", "--data-dir", data.path],
            environment: ["SARVAM_ADMIN_KEY": adminKey], logPath: data.appendingPathComponent("server.log").path)
        defer { server.stop() }
        try await server.waitUntilReady()

        let (status, created) = try await HTTP.request(
            port: server.port, "POST", "/api/conversations", key: adminKey, json: #"{"temperature": 0, "max_tokens": 600}"#)
        XCTAssertEqual(status, 201, created)
        let id = try XCTUnwrap(
            (try JSONSerialization.jsonObject(with: Data(created.utf8)) as? [String: Any])?["id"] as? String, created)

        let question = "Count from 1 to 300, one number per line, nothing else."
        let watcher = StreamWatcher(pid: server.pid, flushSeconds: 2.5)
        let request = HTTP.raw("POST", "/api/conversations/\(id)/messages", key: adminKey, json: "{\"content\": \"\(question)\"}")
        let received = try await LiveServerTests.readThenHangUp(port: server.port, request: request) { watcher.seen($0) }
        XCTAssertTrue(watcher.killed, "the stream ended before the kill:\n\(received)\n\(server.log)")
        XCTAssertEqual(server.waitForExit(), 128 + SIGKILL, "killed by SIGKILL")
        let streamed = Self.deltas(received)
        XCTAssertGreaterThan(streamed.count, 0)

        let store = try await openChatStore(location, logger: quietLogger())
        let messages = try await store.messages(conversationId: id)
        try await store.close()
        XCTAssertEqual(messages.map(\.role), [.user, .assistant], "\(messages)")
        guard messages.count == 2 else { return }
        XCTAssertEqual(messages[0].content, question)
        XCTAssertEqual(messages[0].status, .complete)
        let reply = messages[1]
        XCTAssertEqual(reply.status, .interrupted, "a reply cut by a crash is marked interrupted")
        XCTAssertNil(reply.finishReason)
        XCTAssertFalse(reply.content.isEmpty, "at least one flush reached the store before the kill")
        let sent = streamed.joined()
        XCTAssertTrue(sent.hasPrefix(reply.content), "the stored reply is a prefix of what was sent:\n\(reply.content)\n---\n\(sent)")
        print(
            "KilledServerTests: \(location.description): client got \(sent.count) characters in \(streamed.count) deltas, "
                + "the store kept \(reply.content.count)")
    }

    /// The `delta` events' texts of a raw (chunked) SSE response.
    static func deltas(_ raw: String) -> [String] {
        var texts: [String] = []
        var inDelta = false
        // "\r\n" is one Character in Swift: turn the chunk framing's line ends into "\n" first.
        for line in raw.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "event: delta" {
                inDelta = true
            } else if inDelta, line.hasPrefix("data:") {
                let json = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
                if let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], let text = object["content"] as? String {
                    texts.append(text)
                }
                inDelta = false
            }
        }
        return texts
    }
}

/// Watches the bytes of a stream arrive; once deltas have come for `flushSeconds` (so flushes
/// happened), kills the server with SIGKILL while the connection is open, then stops reading.
final class StreamWatcher: @unchecked Sendable {
    private let lock = NSLock()
    private let pid: Int32
    private let flushSeconds: Double
    private var firstDelta: Date?
    private(set) var killed = false

    init(pid: Int32, flushSeconds: Double) {
        self.pid = pid
        self.flushSeconds = flushSeconds
    }

    func seen(_ received: String) -> Bool {
        lock.withLock {
            if killed { return true }
            guard received.contains("event: delta") else { return false }
            let first = firstDelta ?? Date()
            firstDelta = first
            if Date().timeIntervalSince(first) >= flushSeconds {
                kill(pid, SIGKILL)
                killed = true
            }
            return killed
        }
    }
}
