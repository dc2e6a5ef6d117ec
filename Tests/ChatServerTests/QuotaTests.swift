import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// Per-user quotas over HTTP: limits from the server's defaults or set by the admin per user,
/// answered with 429, `Retry-After` and an OpenAI-style error, visible in `/api/me`.
final class QuotaTests: XCTestCase {
    func testRequestsPerMinuteFromTheDefaultAndPerUser() async throws {
        let store = try GRDBChatStore(database: ChatDatabase())
        let f = try await ServerFixture(store: store, quotaDefaults: QuotaLimits(requestsPerMinute: 2))
        let admin = try await Accounts(store: f.store).bootstrapAdmin(presetKey: nil)!.key
        let chat = #"{"messages": [{"role": "user", "content": "hello there"}]}"#
        try await f.test { client in
            // The minute may roll over between requests: retry the whole check once if it did.
            for attempt in 0..<2 {
                let minute = Int(Date().timeIntervalSince1970 / 60)
                var statuses: [HTTPResponse.Status] = []
                var refused: TestResponse?
                for _ in 0..<3 {
                    let r = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat)
                    statuses.append(r.status)
                    if r.status == .tooManyRequests { refused = r }
                }
                if Int(Date().timeIntervalSince1970 / 60) != minute && attempt == 0 { continue }
                XCTAssertEqual(statuses, [.ok, .ok, .tooManyRequests])
                let r = try XCTUnwrap(refused)
                XCTAssertEqual(r.error["type"] as? String, "rate_limit_error")
                XCTAssertEqual(r.error["code"] as? String, "rate_limit_exceeded")
                XCTAssertTrue((r.error["message"] as? String ?? "").contains("2 requests per minute"), r.text)
                let retry = try XCTUnwrap(r.headers[.retryAfter].flatMap { Int($0) }, "Retry-After")
                XCTAssertTrue((1...60).contains(retry), "until the next minute: \(retry)")
                break
            }
            // Bob has his own requests; the admin lifts Bob's limit (0) and the default still holds Alice.
            let bob = try await client.send(.post, "/v1/chat/completions", key: f.keyB, json: chat)
            XCTAssertEqual(bob.status, .ok)
            let put = try await client.send(
                .put, "/api/admin/users/bob/quota", key: admin, json: #"{"requests_per_minute": 0, "tokens_per_day": null}"#)
            XCTAssertEqual(put.status, .ok, put.text)
            XCTAssertEqual((put.object["own"] as? [String: Any])?["requests_per_minute"] as? Int, 0)
            XCTAssertTrue((put.object["applied"] as? [String: Any])?["requests_per_minute"] is NSNull, put.text)
            for _ in 0..<4 {
                let r = try await client.send(.post, "/v1/chat/completions", key: f.keyB, json: chat)
                XCTAssertEqual(r.status, .ok, "no limit for Bob now")
            }
            let me = try await client.send(.get, "/api/me", key: f.keyA)
            let quota = try XCTUnwrap(me.object["quota"] as? [String: Any], me.text)
            XCTAssertEqual(quota["requests_per_minute"] as? Int, 2)
            XCTAssertTrue(quota["tokens_per_day"] is NSNull)
            XCTAssertGreaterThanOrEqual(quota["requests_this_minute"] as? Int ?? 0, 1)

            // Only the admin sets limits; bad values are named.
            let forbidden = try await client.send(.put, "/api/admin/users/bob/quota", key: f.keyA, json: #"{"tokens_per_day": 5}"#)
            XCTAssertEqual(forbidden.status, .forbidden)
            let negative = try await client.send(.put, "/api/admin/users/bob/quota", key: admin, json: #"{"tokens_per_day": -5}"#)
            XCTAssertEqual(negative.status, .badRequest)
            XCTAssertEqual(negative.error["param"] as? String, "tokens_per_day")
            let fraction = try await client.send(.put, "/api/admin/users/bob/quota", key: admin, json: #"{"tokens_per_day": 2.5}"#)
            XCTAssertEqual(fraction.status, .badRequest)
            let nobody = try await client.send(.get, "/api/admin/users/nobody/quota", key: admin)
            XCTAssertEqual(nobody.status, .notFound)
        }
    }

    func testTokensPerDayCutTheReplyThenRefuseUntilMidnight() async throws {
        let store = try GRDBChatStore(database: ChatDatabase())
        let long = (1...30).map { "w\($0) " }
        let f = try await ServerFixture(engine: FakeEngine(script: .init(reply: { _ in long })), store: store)
        let admin = try await Accounts(store: f.store).bootstrapAdmin(presetKey: nil)!.key
        try await f.test { client in
            let put = try await client.send(.put, "/api/admin/users/alice/quota", key: admin, json: #"{"tokens_per_day": 12}"#)
            XCTAssertEqual(put.status, .ok, put.text)
            let chat = #"{"messages": [{"role": "user", "content": "go"}], "max_tokens": 8}"#
            let first = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat)
            XCTAssertEqual(first.status, .ok, first.text)
            XCTAssertEqual((first.object["usage"] as? [String: Any])?["completion_tokens"] as? Int, 8)
            let used = try await Self.tokensToday(client, key: f.keyA, atLeast: 8)
            XCTAssertEqual(used, 8)
            // 4 tokens left: the reply is cut to them (finish_reason length), whatever max_tokens says.
            let second = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat)
            XCTAssertEqual(second.status, .ok, second.text)
            XCTAssertEqual((second.object["usage"] as? [String: Any])?["completion_tokens"] as? Int, 4)
            XCTAssertEqual(((second.object["choices"] as? [[String: Any]])?.first)?["finish_reason"] as? String, "length")
            _ = try await Self.tokensToday(client, key: f.keyA, atLeast: 12)
            // Used up: 429 until midnight UTC, on the conversation routes as well.
            let refused = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat)
            XCTAssertEqual(refused.status, .tooManyRequests)
            XCTAssertEqual(refused.error["code"] as? String, "insufficient_quota")
            let now = Date().timeIntervalSince1970
            let toMidnight = Int((now / 86_400).rounded(.down) + 1) * 86_400 - Int(now)
            let retry = try XCTUnwrap(refused.headers[.retryAfter].flatMap { Int($0) })
            XCTAssertLessThanOrEqual(abs(retry - toMidnight), 2, "Retry-After \(retry) vs \(toMidnight) s to midnight UTC")
            let created = try await client.send(.post, "/api/conversations", key: f.keyA, json: "{}")
            let id = try XCTUnwrap(created.object["id"] as? String)
            let turn = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content": "hi"}"#)
            XCTAssertEqual(turn.status, .tooManyRequests)
            let messages = try await f.store.messages(conversationId: id)
            XCTAssertTrue(messages.isEmpty, "a refused turn stores nothing: \(messages)")
            // Bob is not limited.
            let bob = try await client.send(.post, "/v1/chat/completions", key: f.keyB, json: chat)
            XCTAssertEqual(bob.status, .ok)
        }
    }

    /// Polls `/api/me` until the day's tokens reach `atLeast` (a reply's tokens are counted once it has been written).
    static func tokensToday(_ client: any TestClientProtocol, key: String, atLeast: Int) async throws -> Int {
        var last = -1
        for _ in 0..<50 {
            let me = try await client.send(.get, "/api/me", key: key)
            last = (me.object["quota"] as? [String: Any])?["tokens_today"] as? Int ?? -1
            if last >= atLeast { return last }
            try await Task.sleep(for: .milliseconds(20))
        }
        return last
    }
}
