import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// Fields of `/v1` bodies the server does not act on are refused by name; the harmless ones
/// clients send anyway are accepted. Expectations from OpenAI's API reference.
final class OpenAIFieldsTests: XCTestCase {
    static var messages: [[String: Any]] { [["role": "user", "content": "hi there"]] }

    func testUnsupportedFieldsAreRefusedByName() async throws {
        let refused: [(String, String, Any)] = [
            ("/v1/chat/completions", "tools", [["type": "function", "function": ["name": "f"]]]),
            ("/v1/chat/completions", "tool_choice", "auto"),
            ("/v1/chat/completions", "functions", [["name": "f"]]),
            ("/v1/chat/completions", "function_call", "auto"),
            ("/v1/chat/completions", "response_format", ["type": "json_object"]),
            ("/v1/chat/completions", "response_format", ["type": "json_schema", "json_schema": ["name": "x"]]),
            ("/v1/chat/completions", "logit_bias", ["50256": -100]),
            ("/v1/chat/completions", "top_k", 5),
            ("/v1/chat/completions", "frobnicate", true),
            ("/v1/completions", "suffix", "}"),
            ("/v1/completions", "best_of", 3),
            ("/v1/completions", "echo", true),
            ("/v1/completions", "top_logprobs", 2),
        ]
        let cases = refused.map { path, field, value in
            var body: [String: Any] = path.hasSuffix("chat/completions") ? ["messages": Self.messages] : ["prompt": "hi"]
            body[field] = value
            return (path, field, jsonString(body))
        }
        let f = try await ServerFixture()
        try await f.test { client in
            for (path, field, json) in cases {
                let r = try await client.send(.post, path, key: f.keyA, json: json)
                XCTAssertEqual(r.status, .badRequest, "\(path) \(field): \(r.text)")
                XCTAssertEqual(r.error["param"] as? String, field, "\(path) \(field)")
                XCTAssertTrue((r.error["message"] as? String ?? "").contains(field), r.text)
            }
        }
    }

    func testHarmlessFieldsAndNoOpValuesAreAccepted() async throws {
        let accepted: [String: Any] = [
            "user": "u-1", "metadata": ["team": "a"], "store": false, "service_tier": "auto", "parallel_tool_calls": false,
            "tools": [], "tool_choice": "none", "response_format": ["type": "text"], "logit_bias": [:] as [String: Any],
            "logprobs": false, "n": 1, "seed": 3, "stop": NSNull(),
        ]
        let cases = accepted.map { field, value in
            var body: [String: Any] = ["messages": Self.messages]
            body[field] = value
            return (field, jsonString(body))
        }
        let f = try await ServerFixture()
        try await f.test { client in
            for (field, json) in cases {
                let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: json)
                XCTAssertEqual(r.status, .ok, "\(field): \(r.text)")
            }
        }
    }

    func testLimitsOfTheSupportedFields() async throws {
        let chat: [(String, Any, String)] = [
            ("n", 5, "n"), ("n", 0, "n"), ("top_logprobs", 21, "top_logprobs"), ("stop", ["a", "b", "c", "d", "e"], "stop"),
            ("min_tokens", -1, "min_tokens"), ("stream_options", ["include_usage": true], "stream_options"),
        ]
        let cases = chat.map { field, value, param in
            var body: [String: Any] = ["messages": Self.messages, "logprobs": true]
            body[field] = value
            return (field, jsonString(body), param)
        }
        let f = try await ServerFixture()
        try await f.test { client in
            for (field, json, param) in cases {
                let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: json)
                XCTAssertEqual(r.status, .badRequest, "\(field): \(r.text)")
                XCTAssertEqual(r.error["param"] as? String, param, r.text)
            }
            let noLogprobs = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: jsonString(["messages": Self.messages, "top_logprobs": 2]))
            XCTAssertEqual(noLogprobs.error["param"] as? String, "top_logprobs", noLogprobs.text)
            let minOverMax = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: jsonString(["messages": Self.messages, "min_tokens": 9, "max_tokens": 3]))
            XCTAssertEqual(minOverMax.error["param"] as? String, "min_tokens", minOverMax.text)
            let twoPrompts = try await client.send(.post, "/v1/completions", key: f.keyA, json: jsonString(["prompt": ["a", "b"]]))
            XCTAssertEqual(twoPrompts.status, .badRequest)
            XCTAssertEqual(twoPrompts.error["param"] as? String, "prompt", twoPrompts.text)
        }
    }
}
