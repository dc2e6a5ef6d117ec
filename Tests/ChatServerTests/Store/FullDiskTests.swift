import Foundation
import GRDB
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A full disk: the real `sarvam serve` with the default model keeps its data folder on a small
/// tmpfs, which the test fills. Writes get a clear 507 (`storage_full`) and an error in the log;
/// what was stored stays readable, replies without storage go on, nothing stored is lost, and once
/// space is freed writing works again without a restart.
final class FullDiskTests: XCTestCase {
    func testFullDiskRefusesWritesKeepsReadsAndRecovers() async throws {
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            return XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
        }
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-full-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let (code, output) = try Spawn.run("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", data.path])
        guard code == 0 else {
            try? FileManager.default.removeItem(at: data)
            throw XCTSkip("cannot mount a 4 MB tmpfs as the data folder here (mount needs root): \(output)")
        }
        addTeardownBlock {
            _ = try? Spawn.run("/bin/umount", [data.path])
            try? FileManager.default.removeItem(at: data)
        }
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-full-\(UUID().uuidString).log").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: logPath) }
        let adminKey = "sk-sarvam-test-admin-\(UUID().uuidString.prefix(8))"
        let server = try ServerProcess(
            arguments: ["--model", model, "--context", "1024", "--threads", "2", "--data-dir", data.path],
            environment: ["SARVAM_ADMIN_KEY": adminKey], logPath: logPath)
        defer { server.stop() }
        try await server.waitUntilReady()

        let (created, body) = try await HTTP.request(port: server.port, "POST", "/api/conversations", key: adminKey, json: "{}")
        XCTAssertEqual(created, 201, body)
        let id = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["id"] as? String)
        let turn = #"{"content": "Say hello.", "max_tokens": 6, "temperature": 0}"#
        let (first, firstBody) = try await HTTP.request(port: server.port, "POST", "/api/conversations/\(id)/messages", key: adminKey, json: turn)
        XCTAssertEqual(first, 200)
        XCTAssertTrue(firstBody.contains("event: done"), firstBody)

        let filler = data.appendingPathComponent("filler").path
        let written = try Self.fill(filler)
        XCTAssertGreaterThan(written, 0)

        let (refused, refusedBody) = try await HTTP.request(
            port: server.port, "POST", "/api/conversations/\(id)/messages", key: adminKey, json: turn)
        XCTAssertEqual(refused, 507, refusedBody)
        XCTAssertTrue(refusedBody.contains(#""code":"storage_full""#), refusedBody)
        XCTAssertTrue(refusedBody.contains("disk is full"), refusedBody)
        let (newConversation, newBody) = try await HTTP.request(port: server.port, "POST", "/api/conversations", key: adminKey, json: "{}")
        XCTAssertEqual(newConversation, 507, newBody)

        // Reads and replies that store nothing go on.
        let (read, readBody) = try await HTTP.request(port: server.port, "GET", "/api/conversations/\(id)", key: adminKey)
        XCTAssertEqual(read, 200, readBody)
        let messages = try XCTUnwrap(
            (try JSONSerialization.jsonObject(with: Data(readBody.utf8)) as? [String: Any])?["messages"] as? [[String: Any]], readBody)
        XCTAssertEqual(messages.map { $0["role"] as? String }, ["user", "assistant"], "the refused turn left nothing behind")
        XCTAssertEqual(messages.last?["status"] as? String, "complete")
        let (listed, _) = try await HTTP.request(port: server.port, "GET", "/api/conversations", key: adminKey)
        XCTAssertEqual(listed, 200)
        let (chat, chatBody) = try await HTTP.request(
            port: server.port, "POST", "/v1/chat/completions", key: adminKey,
            json: #"{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0}"#)
        XCTAssertEqual(chat, 200, chatBody)
        XCTAssertTrue(server.log.contains("the disk is full"), "the log says why:\n\(server.log)")

        // Space again: writes work at once.
        try FileManager.default.removeItem(atPath: filler)
        let (again, againBody) = try await HTTP.request(
            port: server.port, "POST", "/api/conversations/\(id)/messages", key: adminKey, json: turn)
        XCTAssertEqual(again, 200, againBody)
        XCTAssertTrue(againBody.contains("event: done"), againBody)
        server.stop()

        let queue = try DatabaseQueue(path: data.appendingPathComponent("sarvam.sqlite").path)
        let integrity = try await queue.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
        XCTAssertEqual(integrity, ["ok"])
        let stored = try await queue.read { db in
            try Row.fetchAll(db, sql: "SELECT role, status FROM messages WHERE conversationId = ? ORDER BY id", arguments: [id])
                .map { "\($0["role"] as String) \($0["status"] as String)" }
        }
        XCTAssertEqual(stored, ["user complete", "assistant complete", "user complete", "assistant complete"])
        try queue.close()
    }

    /// Writes zeros to `path` until the file system is full; the bytes written.
    static func fill(_ path: String) throws -> Int {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw StringError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 64 << 10)
        var total = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                guard errno == ENOSPC else { throw StringError("writing \(path): \(String(cString: strerror(errno)))") }
                return total
            }
            if n == 0 { return total }
            total += n
        }
    }
}
