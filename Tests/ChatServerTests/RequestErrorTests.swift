import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// Requests that are refused say why in terms of what the client sent, and `HEAD /health` works
/// for load balancers that probe with it.
final class RequestErrorTests: XCTestCase {
    func testHeadHealthAnswers200WithoutABody() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let head = try await client.execute(uri: "/health", method: .head)
            XCTAssertEqual(head.status, .ok)
            XCTAssertEqual(head.body.readableBytes, 0)
            let get = try await client.execute(uri: "/health", method: .get)
            XCTAssertEqual(get.status, .ok)
            XCTAssertTrue(get.text.contains("\"ok\""))
        }
    }

    func testFractionalMaxTokensIsNamed() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            for (field, value) in [("max_tokens", "4.5"), ("max_completion_tokens", "2.25"), ("seed", "0.5"), ("max_tokens", "1e40")] {
                let r = try await client.send(
                    .post, "/v1/chat/completions", key: f.keyA,
                    json: #"{"messages":[{"role":"user","content":"hi"}],"\#(field)":\#(value)}"#)
                XCTAssertEqual(r.status, .badRequest)
                let message = r.error["message"] as? String ?? ""
                XCTAssertEqual(r.error["param"] as? String, field, message)
                XCTAssertTrue(message.contains("must be an integer"), message)
                XCTAssertFalse(message.contains("not valid JSON"), message)
            }
            // The conversation routes too.
            let id = try await create(client, key: f.keyA)
            let reply = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"hi","max_tokens":4.5}"#)
            XCTAssertEqual(reply.status, .badRequest)
            XCTAssertEqual(reply.error["param"] as? String, "max_tokens")
            let created = try await client.send(.post, "/api/conversations", key: f.keyA, json: #"{"max_tokens":7.5}"#)
            XCTAssertEqual(created.status, .badRequest)
            XCTAssertEqual(created.error["param"] as? String, "max_tokens")
            // Broken JSON is still called that.
            let broken = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: #"{"messages":["#)
            XCTAssertEqual(broken.status, .badRequest)
            XCTAssertTrue((broken.error["message"] as? String ?? "").contains("not valid JSON"), broken.text)
        }
    }

    func testInvalidUTF8IsNamed() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            var body = Array(#"{"messages":[{"role":"user","content":"ab"#.utf8)
            let offset = body.count
            body += [0xFF, 0xC3]  // 0xFF never occurs in UTF-8
            body += Array(#""}]}"#.utf8)
            let r = try await client.execute(
                uri: "/v1/chat/completions", method: .post, headers: headers(key: f.keyA), body: ByteBuffer(bytes: body))
            XCTAssertEqual(r.status, .badRequest)
            let message = r.error["message"] as? String ?? ""
            XCTAssertTrue(message.contains("not valid UTF-8"), message)
            XCTAssertTrue(message.contains("byte \(offset)"), message)
            XCTAssertFalse(message.contains("expected a string"), message)
        }
    }

    /// FakeEngine's context is 2048 tokens, one per 4 bytes, 2 + 4 per message; the fast
    /// configuration reserves 16 for the reply. A system prompt of n tokens with an empty user
    /// message needs 2 + (4 + n) + 4 tokens: it fits while 10 + n + 16 < 2048, so n <= 2021.
    func testSystemPromptThatCannotFitIsRefusedAtCreation() async throws {
        var configuration = ServerFixture.fastConfiguration
        configuration.maxBodyBytes = 2 << 20
        let f = try await ServerFixture(configuration: configuration)
        try await f.test { client in
            for (bytes, fits) in [(2021 * 4, true), (2022 * 4, false), (1 << 20, false)] {
                let json = jsonString(["system_prompt": String(repeating: "s", count: bytes)])
                let r = try await client.send(.post, "/api/conversations", key: f.keyA, json: json)
                if fits {
                    XCTAssertEqual(r.status, .created, r.text)
                    let id = try XCTUnwrap(r.object["id"] as? String)
                    let reply = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"a"}"#)
                    XCTAssertEqual(reply.status, .ok, "a conversation that was accepted can be used")
                    XCTAssertTrue(reply.text.contains("event: done"), reply.text)
                } else {
                    XCTAssertEqual(r.status, .badRequest, "\(bytes) bytes: \(r.text.prefix(300))")
                    XCTAssertEqual(r.error["param"] as? String, "system_prompt")
                    XCTAssertEqual(r.error["code"] as? String, "context_length_exceeded")
                    let message = r.error["message"] as? String ?? ""
                    XCTAssertTrue(message.contains("system prompt"), message)
                    XCTAssertFalse(message.contains("latest message"), message)
                }
            }
            let list = try await client.send(.get, "/api/conversations", key: f.keyA)
            XCTAssertEqual(list.object["total"] as? Int, 1, "refused conversations are not stored")
        }
    }
}
