import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest
import ChatServer

let hello = #"{"model":"fake-model","messages":[{"role":"user","content":"hi there"}]}"#

final class ChatCompletionsTests: XCTestCase {
    func testNonStreamingShape() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: hello)
            XCTAssertEqual(r.status, .ok, r.text)
            XCTAssertEqual(r.headers[.contentType], "application/json")
            XCTAssertTrue(r.headers.contains { $0.name.rawName == "x-request-id" })
            let o = r.object
            XCTAssertTrue((o["id"] as? String)?.hasPrefix("chatcmpl-") == true)
            XCTAssertEqual(o["object"] as? String, "chat.completion")
            XCTAssertEqual(o["model"] as? String, "fake-model")
            XCTAssertNotNil(o["created"] as? Int)
            let choice = try XCTUnwrap((o["choices"] as? [[String: Any]])?.first)
            XCTAssertEqual(choice["index"] as? Int, 0)
            XCTAssertEqual(choice["finish_reason"] as? String, "stop")
            let message = try XCTUnwrap(choice["message"] as? [String: Any])
            XCTAssertEqual(message["role"] as? String, "assistant")
            XCTAssertEqual(message["content"] as? String, "You said: hi there")
            let usage = try XCTUnwrap(o["usage"] as? [String: Any])
            // FakeEngine: 2 + (4 + ceil(8 / 4)) prompt tokens; pieces "You ", "said: ", "hi ", "there".
            XCTAssertEqual(usage["prompt_tokens"] as? Int, 8)
            XCTAssertEqual(usage["completion_tokens"] as? Int, 4)
            XCTAssertEqual(usage["total_tokens"] as? Int, 12)
            XCTAssertEqual((usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int, 0)
        }
    }

    func testStreamingEventOrder() async throws {
        let engine = FakeEngine(script: .init(promptDelay: .milliseconds(200)))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let body = #"{"messages":[{"role":"user","content":"hi there"}],"stream":true,"stream_options":{"include_usage":true}}"#
            let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: body)
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(r.headers[.contentType], "text/event-stream")
            let frames = parseSSE(r.text)
            // Pings while the prompt is processed, before any data.
            let firstData = try XCTUnwrap(frames.firstIndex { $0.data != nil })
            XCTAssertGreaterThanOrEqual(firstData, 2, "expected pings during the 200 ms prompt: \(frames)")
            XCTAssertTrue(frames[..<firstData].allSatisfy { $0.comment == "ping" })
            let data = frames.compactMap(\.data)
            XCTAssertEqual(data.last, "[DONE]")
            let chunks = frames.filter { $0.data != nil && $0.data != "[DONE]" }.map(\.json)
            XCTAssertEqual(Set(chunks.compactMap { $0["id"] as? String }).count, 1, "one id for the whole stream")
            XCTAssertTrue(chunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            // First delta carries the role.
            let firstDelta = (chunks[0]["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
            XCTAssertEqual(firstDelta?["role"] as? String, "assistant")
            // Text deltas concatenate to the reply.
            let choices = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first }
            let text = choices.compactMap { ($0["delta"] as? [String: Any])?["content"] as? String }.joined()
            XCTAssertEqual(text, "You said: hi there")
            // Finish reason on the last choice chunk only; then the usage chunk with no choices.
            let reasons = choices.map { $0["finish_reason"] as? String }
            XCTAssertEqual(reasons.last, "stop")
            XCTAssertTrue(reasons.dropLast().allSatisfy { $0 == nil })
            let usageChunk = try XCTUnwrap(chunks.last)
            XCTAssertEqual((usageChunk["choices"] as? [Any])?.count, 0)
            XCTAssertEqual((usageChunk["usage"] as? [String: Any])?["completion_tokens"] as? Int, 4)
        }
    }

    func testMaxTokensStopsWithLength() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"hi there"}],"max_tokens":2}"#)
            let choice = (r.object["choices"] as? [[String: Any]])?.first
            XCTAssertEqual(choice?["finish_reason"] as? String, "length")
            XCTAssertEqual((choice?["message"] as? [String: Any])?["content"] as? String, "You said: ")
            XCTAssertEqual((r.object["usage"] as? [String: Any])?["completion_tokens"] as? Int, 2)
        }
    }

    func testStopStringCutsTheReply() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"hi there"}],"stop":"id: h"}"#)
            let choice = (r.object["choices"] as? [[String: Any]])?.first
            XCTAssertEqual(choice?["finish_reason"] as? String, "stop")
            XCTAssertEqual((choice?["message"] as? [String: Any])?["content"] as? String, "You sa")
        }
        try await eventually("generation stopped after the stop string") { f.engine.activeGenerations == 0 }
    }

    func testContentPartsDeveloperRoleAndUnknownFields() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let body =
                #"{"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],"logit_bias":{},"user":"x","temperature":0.5,"top_p":0.9,"seed":7,"presence_penalty":0.1,"frequency_penalty":0.2,"max_completion_tokens":50}"#
            let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: body)
            XCTAssertEqual(r.status, .ok, r.text)
            let request = try XCTUnwrap(f.engine.requests.last)
            XCTAssertEqual(
                request.messages, [ChatMessage(role: .system, content: "be brief"), ChatMessage(role: .user, content: "hi there")])
            XCTAssertEqual(request.maxTokens, 50)
            XCTAssertEqual(
                request.sampling, SamplingParameters(temperature: 0.5, topP: 0.9, seed: 7, presencePenalty: 0.1, frequencyPenalty: 0.2))
        }
    }

    func testModels() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(.get, "/v1/models", key: f.keyA)
            XCTAssertEqual(r.status, .ok)
            XCTAssertEqual(r.object["object"] as? String, "list")
            let model = try XCTUnwrap((r.object["data"] as? [[String: Any]])?.first)
            XCTAssertEqual(model["id"] as? String, "fake-model")
            XCTAssertEqual(model["object"] as? String, "model")
            XCTAssertEqual(model["owned_by"] as? String, "sarvam-test")
            XCTAssertEqual(model["context_length"] as? Int, 2048)
        }
    }
}

/// Checks the status and OpenAI's error shape.
func assertError(
    _ r: TestResponse, _ status: HTTPResponse.Status, param: String? = nil, code: String? = nil,
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(r.status, status, r.text, file: file, line: line)
    let e = r.error
    XCTAssertNotNil(e["message"] as? String, "error.message missing: \(r.text)", file: file, line: line)
    XCTAssertNotNil(e["type"] as? String, file: file, line: line)
    XCTAssertTrue(e.keys.contains("param") && e.keys.contains("code"), "OpenAI shape has param and code: \(r.text)", file: file, line: line)
    if let param { XCTAssertEqual(e["param"] as? String, param, r.text, file: file, line: line) }
    if let code { XCTAssertEqual(e["code"] as? String, code, r.text, file: file, line: line) }
}

final class APIErrorStatusTests: XCTestCase {
    func testBadRequestsNameTheField() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let path = "/v1/chat/completions"
            var r = try await client.send(.post, path, key: f.keyA, json: "{not json")
            assertError(r, .badRequest)
            XCTAssertTrue((r.error["message"] as? String ?? "").contains("JSON"))
            r = try await client.send(.post, path, key: f.keyA, json: #"{"model":"fake-model"}"#)
            assertError(r, .badRequest, param: "messages")
            r = try await client.send(.post, path, key: f.keyA, json: #"{"messages":[{"role":"user","content":5}]}"#)
            assertError(r, .badRequest, param: "messages[0].content")
            r = try await client.send(.post, path, key: f.keyA, json: #"{"messages":[{"role":"robot","content":"x"}]}"#)
            assertError(r, .badRequest, param: "messages[0].role")
            r = try await client.send(.post, path, key: f.keyA, json: #"{"messages":[{"role":"user","content":"x"}],"temperature":5}"#)
            assertError(r, .badRequest, param: "temperature")
            r = try await client.send(.post, path, key: f.keyA, json: #"{"messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#)
            assertError(r, .badRequest, param: "max_tokens")
            r = try await client.send(.post, path, key: f.keyA, json: #"{"messages":[]}"#)
            assertError(r, .badRequest, param: "messages")
        }
    }

    func testContextLengthExceeded() async throws {
        let f = try await ServerFixture(engine: FakeEngine(contextLength: 64))
        try await f.test { client in
            let long = String(repeating: "abcd", count: 100)  // 100 tokens
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"\#(long)"}]}"#)
            assertError(r, .badRequest, code: "context_length_exceeded")
            let message = r.error["message"] as? String ?? ""
            XCTAssertTrue(message.contains("64") && message.contains("106"), message)  // limit and 2 + 4 + 100
            let r2 = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"hi"}],"max_tokens":60}"#)
            assertError(r2, .badRequest, code: "context_length_exceeded")
        }
    }

    func testUnauthorized() async throws {
        let f = try await ServerFixture()
        let revoked = try await f.service.accounts.createKey(userName: "alice")
        try await f.service.accounts.revokeKey(id: revoked.record.id)
        try await f.test { client in
            assertError(try await client.send(.get, "/v1/models", key: nil), .unauthorized)
            assertError(try await client.send(.get, "/v1/models", key: "sk-sarvam-wrong"), .unauthorized)
            assertError(try await client.send(.get, "/v1/models", key: revoked.key), .unauthorized)
            assertError(try await client.send(.get, "/api/conversations", key: nil), .unauthorized)
            var h = HTTPFields()
            h[.authorization] = "Basic abc"
            let r = try await client.execute(uri: "/v1/models", method: .get, headers: h)
            assertError(r, .unauthorized)
        }
    }

    func testNotFound() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#)
            assertError(r, .notFound, param: "model", code: "model_not_found")
            assertError(try await client.send(.get, "/v1/nothing-here", key: f.keyA), .notFound)
            assertError(try await client.send(.get, "/api/conversations/conv_missing", key: f.keyA), .notFound)
        }
    }

    func testBodyTooLarge() async throws {
        var configuration = ServerFixture.fastConfiguration
        configuration.maxBodyBytes = 1024
        let f = try await ServerFixture(configuration: configuration)
        try await f.test { client in
            let big = String(repeating: "x", count: 2000)
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"\#(big)"}]}"#)
            assertError(r, .contentTooLarge, code: "request_too_large")
        }
    }

    func testSaturatedGets429WithRetryAfter() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(50), capacity: 1))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let slow = Task {
                try await client.send(
                    .post, "/v1/chat/completions", key: f.keyA,
                    json: #"{"messages":[{"role":"user","content":"one two three four five six seven eight"}]}"#)
            }
            try await eventually("first reply running") { f.engine.activeGenerations == 1 }
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyB,
                json: #"{"messages":[{"role":"user","content":"x"}]}"#)
            assertError(r, .tooManyRequests, code: "rate_limit_exceeded")
            XCTAssertNotNil(r.headers[.retryAfter].flatMap(Int.init))
            let first = try await slow.value
            XCTAssertEqual(first.status, .ok)
            // Once the first is done, a new one is admitted.
            let again = try await client.send(
                .post, "/v1/chat/completions", key: f.keyB, json: #"{"messages":[{"role":"user","content":"x"}]}"#)
            XCTAssertEqual(again.status, .ok)
        }
    }

    func testEngineRefusalIsA429BeforeTheStreamStarts() async throws {
        let f = try await ServerFixture(engine: FakeEngine(script: .init(refusal: .busy(retryAfterSeconds: 7))))
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"x"}],"stream":true}"#)
            assertError(r, .tooManyRequests, code: "rate_limit_exceeded")
            XCTAssertEqual(r.headers[.retryAfter], "7")
            let id = try await create(client, key: f.keyA)
            let m = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"x"}"#)
            assertError(m, .tooManyRequests)
            let awaited11 = try await f.store.messages(conversationId: id).count
            XCTAssertEqual(awaited11, 0, "nothing stored for a refused request")
            let awaited12 = await f.service.registry.runningCount
            XCTAssertEqual(awaited12, 0)
        }
    }

    func testLoadingGives503AndHealthFollows() async throws {
        let catalog = EngineCatalog()
        let engine = FakeEngine()
        let f = try await ServerFixture(engine: engine, catalog: catalog)
        try await f.test { client in
            let health = try await client.send(.get, "/health", key: nil)
            XCTAssertEqual(health.status, .serviceUnavailable)
            XCTAssertEqual(health.object["status"] as? String, "loading")
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"messages":[{"role":"user","content":"x"}]}"#)
            assertError(r, .serviceUnavailable, code: "model_loading")
            XCTAssertNotNil(r.headers[.retryAfter])
            catalog.setReady([engine])
            let ready = try await client.send(.get, "/health", key: nil)
            XCTAssertEqual(ready.status, .ok)
            XCTAssertEqual(ready.object["status"] as? String, "ok")
            let ok = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"messages":[{"role":"user","content":"x"}]}"#)
            XCTAssertEqual(ok.status, .ok)
        }
    }

    func testEngineFailureMidStream() async throws {
        let engine = FakeEngine(script: .init(failure: .failed("kv cache exhausted")))
        let f = try await ServerFixture(engine: engine)
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"messages":[{"role":"user","content":"x"}]}"#)
            assertError(r, .internalServerError)
            let s = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"messages":[{"role":"user","content":"x"}],"stream":true}"#)
            let frames = parseSSE(s.text).compactMap(\.data)
            XCTAssertEqual(frames.last, "[DONE]")
            XCTAssertTrue(frames.contains { $0.contains("kv cache exhausted") }, "\(frames)")
        }
    }
}
