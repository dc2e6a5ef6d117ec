import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// The exact fields of every JSON body the server writes, explicit `null`s included (OpenAI clients
/// and the web page read them): each object's key set, and which values are null. Key order is not
/// part of the contract.
final class ResponseShapeTests: XCTestCase {
    static let usageKeys: Set<String> = ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"]
    static let errorKeys: Set<String> = ["message", "type", "param", "code"]
    static let conversationKeys: Set<String> = ["id", "object", "title", "model", "settings", "created_at", "updated_at"]
    static let settingsKeys: Set<String> = ["temperature", "top_p", "max_tokens"]
    static let messageKeys: Set<String> = [
        "id", "role", "content", "status", "token_count", "prompt_tokens", "generation_seconds",
        "tokens_per_second", "finish_reason", "dropped_turns", "model", "error", "created_at",
    ]

    func testChatCompletion() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: hello)
            XCTAssertEqual(r.headers[.contentType], "application/json")
            let o = r.object
            assertKeys(o, ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"], nulls: ["system_fingerprint"])
            let choices = try XCTUnwrap(o["choices"] as? [[String: Any]])
            XCTAssertEqual(choices.count, 1)
            assertKeys(choices[0], ["index", "message", "logprobs", "finish_reason"], nulls: ["logprobs"])
            assertKeys(try XCTUnwrap(choices[0]["message"] as? [String: Any]), ["role", "content"])
            let usage = try XCTUnwrap(o["usage"] as? [String: Any])
            assertKeys(usage, Self.usageKeys)
            assertKeys(try XCTUnwrap(usage["prompt_tokens_details"] as? [String: Any]), ["cached_tokens"])
        }
    }

    func testChatCompletionChunks() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let body = #"{"messages":[{"role":"user","content":"hi there"}],"stream":true,"stream_options":{"include_usage":true}}"#
            let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: body)
            let chunks = parseSSE(r.text).filter { $0.data != nil && $0.data != "[DONE]" }.map(\.json)
            XCTAssertGreaterThanOrEqual(chunks.count, 4)
            let chunkKeys: Set<String> = ["id", "object", "created", "model", "system_fingerprint", "choices"]
            for (i, chunk) in chunks.dropLast().enumerated() {
                assertKeys(chunk, chunkKeys, nulls: ["system_fingerprint"])
                let choices = try XCTUnwrap(chunk["choices"] as? [[String: Any]])
                XCTAssertEqual(choices.count, 1)
                let finished = i == chunks.count - 2
                assertKeys(
                    choices[0], ["index", "delta", "logprobs", "finish_reason"],
                    nulls: finished ? ["logprobs"] : ["logprobs", "finish_reason"])
            }
            func delta(_ i: Int) -> [String: Any] {
                ((chunks[i]["choices"] as? [[String: Any]])?[0]["delta"] as? [String: Any]) ?? ["missing": 0]
            }
            assertKeys(delta(0), ["role", "content"])
            XCTAssertEqual(delta(0)["content"] as? String, "")
            assertKeys(delta(1), ["content"])
            assertKeys(delta(chunks.count - 2), [])
            let usageChunk = try XCTUnwrap(chunks.last)
            assertKeys(usageChunk, chunkKeys.union(["usage"]), nulls: ["system_fingerprint"])
            assertKeys(try XCTUnwrap(usageChunk["usage"] as? [String: Any]), Self.usageKeys)
        }
    }

    func testErrorsInAndOutOfStreams() async throws {
        let f = try await ServerFixture(engine: FakeEngine(script: .init(failure: .failed("kv cache exhausted"))))
        try await f.test { client in
            let missing = try await client.send(.get, "/api/conversations/conv_missing", key: f.keyA)
            XCTAssertEqual(missing.headers[.contentType], "application/json")
            assertKeys(missing.object, ["error"])
            assertKeys(missing.error, Self.errorKeys, nulls: ["param"])

            let s = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"x"}],"stream":true}"#)
            let frame = try XCTUnwrap(parseSSE(s.text).first { $0.data?.contains("error") == true })
            assertKeys(frame.json, ["error"])
            assertKeys(try XCTUnwrap(frame.json["error"] as? [String: Any]), Self.errorKeys, nulls: ["param"])

            let id = try await create(client, key: f.keyA)
            let m = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"x"}"#)
            let event = try XCTUnwrap(parseSSE(m.text).first { $0.event == "error" })
            assertKeys(event.json, ["error", "message"])
            assertKeys(try XCTUnwrap(event.json["error"] as? [String: Any]), Self.errorKeys, nulls: ["param"])
            let stored = try XCTUnwrap(event.json["message"] as? [String: Any])
            assertKeys(stored, Self.messageKeys, nulls: ["tokens_per_second", "finish_reason"])
            XCTAssertEqual(stored["status"] as? String, "error")
        }
    }

    func testModelsMeAndHealth() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let models = try await client.send(.get, "/v1/models", key: f.keyA)
            assertKeys(models.object, ["object", "data"])
            assertKeys(
                try XCTUnwrap((models.object["data"] as? [[String: Any]])?.first),
                ["id", "object", "created", "owned_by", "context_length"])
            let me = try await client.send(.get, "/api/me", key: f.keyA)
            assertKeys(me.object, ["id", "name", "is_admin", "models", "quota"], nulls: [])
            assertKeys(
                try XCTUnwrap(me.object["quota"] as? [String: Any]),
                ["requests_per_minute", "tokens_per_day", "requests_this_minute", "tokens_today"],
                nulls: ["requests_per_minute", "tokens_per_day"])
            XCTAssertEqual(me.object["models"] as? [String], ["fake-model"])
            let health = try await client.send(.get, "/health", key: nil)
            XCTAssertEqual(health.headers[.contentType], "application/json")
            assertKeys(health.object, ["status", "models"])
        }
        let loading = try await ServerFixture(catalog: EngineCatalog())
        try await loading.test { client in
            assertKeys(try await client.send(.get, "/health", key: nil).object, ["status"])
        }
        let failed = EngineCatalog()
        failed.setFailed("no such file")
        try await ServerFixture(catalog: failed).test { client in
            let health = try await client.send(.get, "/health", key: nil)
            assertKeys(health.object, ["status", "error"])
            XCTAssertEqual(health.object["error"] as? String, "no such file")
        }
    }

    func testConversationObjects() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let created = try await client.send(.post, "/api/conversations", key: f.keyA, json: "{}")
            XCTAssertEqual(created.status, .created)
            XCTAssertEqual(created.headers[.contentType], "application/json")
            assertKeys(created.object, Self.conversationKeys)
            assertKeys(
                try XCTUnwrap(created.object["settings"] as? [String: Any]), Self.settingsKeys,
                nulls: ["temperature", "top_p", "max_tokens"])
            let id = try XCTUnwrap(created.object["id"] as? String)

            let tuned = try await client.send(.post, "/api/conversations", key: f.keyA, json: #"{"temperature":0.5,"max_tokens":64}"#)
            let settings = try XCTUnwrap(tuned.object["settings"] as? [String: Any])
            assertKeys(settings, Self.settingsKeys, nulls: ["top_p"])
            XCTAssertEqual(settings["temperature"] as? Double, 0.5)
            XCTAssertEqual(settings["max_tokens"] as? Int, 64)

            let list = try await client.send(.get, "/api/conversations", key: f.keyA)
            assertKeys(list.object, ["object", "data", "total", "limit", "offset", "has_more"])
            assertKeys(try XCTUnwrap((list.object["data"] as? [[String: Any]])?.first), Self.conversationKeys)

            let reply = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"hi there"}"#)
            let frames = parseSSE(reply.text)
            let userMessage = try XCTUnwrap(frames.first { $0.event == "user_message" }).json
            assertKeys(
                userMessage, Self.messageKeys,
                nulls: [
                    "prompt_tokens", "generation_seconds", "tokens_per_second",
                    "finish_reason", "dropped_turns", "model", "error",
                ])
            assertKeys(try XCTUnwrap(frames.first { $0.event == "start" }).json, ["model", "prompt_tokens", "dropped_turns"])
            assertKeys(try XCTUnwrap(frames.first { $0.event == "delta" }).json, ["content"])
            let done = try XCTUnwrap(frames.first { $0.event == "done" }).json
            assertKeys(done, ["message", "finish_reason", "interrupted"])
            assertKeys(try XCTUnwrap(done["message"] as? [String: Any]), Self.messageKeys, nulls: ["error"])

            let full = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA)
            assertKeys(full.object, Self.conversationKeys.union(["messages", "running"]))
            let messages = try XCTUnwrap(full.object["messages"] as? [[String: Any]])
            XCTAssertEqual(messages.count, 2)
            for message in messages { assertKeys(message, Self.messageKeys, nulls: nil) }

            let renamed = try await client.send(.patch, "/api/conversations/\(id)", key: f.keyA, json: #"{"title":"New"}"#)
            assertKeys(renamed.object, Self.conversationKeys)
            let stopped = try await client.send(.post, "/api/conversations/\(id)/stop", key: f.keyA)
            assertKeys(stopped.object, ["id", "stopped"])
            let deleted = try await client.send(.delete, "/api/conversations/\(id)", key: f.keyA)
            assertKeys(deleted.object, ["id", "object", "deleted"])
            XCTAssertEqual(deleted.object["deleted"] as? Bool, true)
        }
    }

    func testReplyStoppedBeforeItsEndHasANullFinishReason() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(30)))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let long = (0..<40).map { "w\($0)" }.joined(separator: " ")
            let reply = Task {
                try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"\#(long)"}"#)
            }
            try await eventually("some text streamed") { engine.piecesEmitted >= 2 }
            _ = try await client.send(.post, "/api/conversations/\(id)/stop", key: f.keyA)
            let text = try await reply.value.text
            let done = try XCTUnwrap(parseSSE(text).first { $0.event == "done" }).json
            assertKeys(done, ["message", "finish_reason", "interrupted"], nulls: ["finish_reason"])
            XCTAssertEqual(done["interrupted"] as? Bool, true)
        }
    }
}

/// `object` has exactly `keys`; the values under `nulls` are JSON null and no others are (`nulls: nil`
/// checks only the keys).
func assertKeys(
    _ object: [String: Any], _ keys: Set<String>, nulls: Set<String>? = [],
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(Set(object.keys), keys, "keys of \(object)", file: file, line: line)
    guard let nulls else { return }
    XCTAssertEqual(Set(object.filter { $0.value is NSNull }.keys), nulls, "null values of \(object)", file: file, line: line)
}
