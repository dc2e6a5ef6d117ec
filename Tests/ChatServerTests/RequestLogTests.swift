import Foundation
import Logging
import TestSupport
import XCTest

@testable import ChatServer

/// The request log as operators search it: the real `sarvam serve` with the default model writes
/// one JSON object per request with its id (the one returned in `X-Request-Id`), user,
/// conversation, route template, status, token counts, time to first token and duration; no line
/// holds a key, valid or not.
final class RequestLogTests: XCTestCase {
    func testOneJSONLinePerRequestWithoutSecrets() async throws {
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            return XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
        }
        let adminKey = "sk-sarvam-logtest-\(UUID().uuidString.prefix(12))"
        let wrongKey = "sk-sarvam-wrong-\(UUID().uuidString.prefix(12))"
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-log-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: data) }
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let server = try ServerProcess(
            arguments: ["--model", model, "--context", "1024", "--threads", "2", "--data-dir", data.path, "--log-format", "json"],
            environment: ["SARVAM_ADMIN_KEY": adminKey], logPath: data.appendingPathComponent("server.log").path)
        defer { server.stop() }
        try await server.waitUntilReady()

        let chat = #"{"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6, "temperature": 0, "stream": true}"#
        let streamed = try await LiveServerTests.readThenHangUp(
            port: server.port, request: HTTP.raw("POST", "/v1/chat/completions", key: adminKey, json: chat)) { _ in false }
        XCTAssertTrue(streamed.hasPrefix("HTTP/1.1 200"), streamed)
        let requestId = try XCTUnwrap(Self.header("x-request-id", in: streamed), streamed)

        let (status, created) = try await HTTP.request(port: server.port, "POST", "/api/conversations", key: adminKey, json: "{}")
        XCTAssertEqual(status, 201, created)
        let conversation = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(created.utf8)) as? [String: Any])?["id"] as? String)
        let (posted, _) = try await HTTP.request(
            port: server.port, "POST", "/api/conversations/\(conversation)/messages", key: adminKey,
            json: #"{"content": "Say hi.", "max_tokens": 4}"#)
        XCTAssertEqual(posted, 200)
        let (refused, _) = try await HTTP.request(port: server.port, "GET", "/api/conversations", key: wrongKey)
        XCTAssertEqual(refused, 401)
        server.stop()

        let log = server.log
        let objects = try log.split(separator: "\n").filter { $0.hasPrefix("{") }.map { line in
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
        }
        let requests = objects.filter { $0["message"] as? String == "request" }
        XCTAssertEqual(requests.count, objects.filter { $0["route"] != nil }.count)

        let chatLine = try XCTUnwrap(requests.first { $0["request_id"] as? String == requestId }, "no line for \(requestId):\n\(log)")
        XCTAssertEqual(chatLine["route"] as? String, "/v1/chat/completions")
        XCTAssertEqual(chatLine["status"] as? Int, 200)
        XCTAssertEqual(chatLine["level"] as? String, "info")
        XCTAssertNotNil(chatLine["user_id"] as? Int)
        XCTAssertGreaterThan(chatLine["prompt_tokens"] as? Int ?? 0, 5)
        XCTAssertEqual(chatLine["completion_tokens"] as? Int, 6)
        let ttft = try XCTUnwrap(chatLine["ttft_ms"] as? Double, "\(chatLine)")
        let duration = try XCTUnwrap(chatLine["duration_ms"] as? Double, "\(chatLine)")
        XCTAssertGreaterThan(ttft, 0)
        XCTAssertLessThanOrEqual(ttft, duration)

        let turn = try XCTUnwrap(requests.first { $0["route"] as? String == "/api/conversations/{id}/messages" }, log)
        XCTAssertEqual(turn["conversation_id"] as? String, conversation)
        XCTAssertEqual(turn["completion_tokens"] as? Int, 4)
        XCTAssertEqual(turn["status"] as? Int, 200)
        let denied = try XCTUnwrap(requests.first { $0["status"] as? Int == 401 }, log)
        XCTAssertNil(denied["user_id"])

        for secret in [adminKey, wrongKey, String(adminKey.suffix(12)), String(wrongKey.suffix(12))] {
            XCTAssertFalse(log.contains(secret), "the log holds a key")
        }
        XCTAssertFalse(log.lowercased().contains("bearer"), "the log holds an Authorization header")
    }

    /// The handler's lines parse as JSON (checked by Foundation's parser), with numbers as numbers
    /// and every control character escaped.
    func testJSONLogHandlerWritesValidLines() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("jsonlog-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: path, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        let output = JSONLogOutput(handle: handle)
        var logger = Logger(label: "test \"label\"") { JSONLogHandler(label: $0, output: output) }
        logger[metadataKey: "shared"] = "yes"
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} line-sep \u{2028} é 🙂"
        logger.info(
            "hello \(awkward)",
            metadata: [
                "n": .stringConvertible(42), "x": .stringConvertible(1.5), "ok": .stringConvertible(true),
                "s": "\(awkward)", "list": ["a", .stringConvertible(2)], "dict": ["k": "v"],
            ])
        logger.debug("not written at info")
        try handle.close()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 2, "one line and the final newline: \(text)")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssertEqual(object["message"] as? String, "hello \(awkward)")
        XCTAssertEqual(object["s"] as? String, awkward)
        XCTAssertEqual(object["label"] as? String, "test \"label\"")
        XCTAssertEqual(object["level"] as? String, "info")
        XCTAssertEqual(object["shared"] as? String, "yes")
        XCTAssertEqual(object["n"] as? Int, 42)
        XCTAssertEqual(object["x"] as? Double, 1.5)
        XCTAssertEqual(object["ok"] as? Bool, true)
        XCTAssertEqual(object["list"] as? [AnyHashable], ["a", 2] as [AnyHashable])
        XCTAssertEqual(object["dict"] as? [String: String], ["k": "v"])
        let time = try XCTUnwrap(object["time"] as? String)
        XCTAssertNotNil(try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(time), time)
    }

    static func header(_ name: String, in response: String) -> String? {
        let head = response.components(separatedBy: "\r\n\r\n").first ?? ""
        for line in head.components(separatedBy: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == name { return parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }
}
