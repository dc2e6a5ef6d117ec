import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

@testable import ChatServer

/// PostgreSQL stopped under a running server (a real server, stopped and started by the test):
/// `/health` says not ready and requests get 503 with `Retry-After` quickly, nothing crashes or
/// hangs, and once PostgreSQL is back requests succeed with no restart of Sarvam.
final class DeadDatabaseTests: XCTestCase {
    func testStoppedPostgresGives503AndRecovers() async throws {
        let postgres: PostgresTestServer
        do { postgres = try PostgresTestServer() } catch {
            throw XCTSkip("PostgreSQL could not be started, so a dead database is not tested: \(error)")
        }
        defer { try? postgres.stop() }
        let url = try PostgresURL(parsing: try postgres.freshDatabase())
        let store = try await PostgresChatStore.open(url, logger: quietLogger())
        let f = try await ServerFixture(engine: FakeEngine(), store: store)
        let clock = ContinuousClock()

        try await f.app.test(.live) { client in
            let health = try await client.execute(uri: "/health", method: .get)
            XCTAssertEqual(health.status, .ok, health.text)
            let id = try await create(client, key: f.keyA)
            let first = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"one"}"#)
            XCTAssertEqual(first.status, .ok, first.text)

            try postgres.pause()

            var start = clock.now
            let down = try await client.execute(uri: "/health", method: .get)
            XCTAssertEqual(down.status, .serviceUnavailable, down.text)
            XCTAssertEqual(down.object["status"] as? String, "store_unavailable", down.text)
            XCTAssertLessThan(clock.now - start, .seconds(5), "/health answered late")

            let requests: [(HTTPRequest.Method, String, String?)] = [
                (.post, "/api/conversations/\(id)/messages", #"{"content":"two"}"#),
                (.get, "/api/conversations", nil),
                (.post, "/v1/chat/completions", #"{"messages":[{"role":"user","content":"hi"}]}"#),
            ]
            for (method, path, json) in requests {
                start = clock.now
                let refused = try await client.send(method, path, key: f.keyA, json: json)
                let took = clock.now - start
                XCTAssertEqual(refused.status, .serviceUnavailable, "\(path): \(refused.text)")
                XCTAssertEqual(refused.error["code"] as? String, "store_unavailable", refused.text)
                XCTAssertNotNil(refused.headers[.retryAfter], "\(path) without Retry-After")
                XCTAssertLessThan(took, .seconds(5), "\(path) answered after \(took)")
            }

            try postgres.resume()
            start = clock.now
            var answered: TestResponse?
            while clock.now - start < .seconds(30) {
                let r = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"three"}"#)
                if r.status == .ok { answered = r; break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let recovered = try XCTUnwrap(answered, "no success within 30 s of PostgreSQL's restart")
            XCTAssertTrue(recovered.text.contains("event: done"), recovered.text)
            print("DeadDatabaseTests: requests succeeded again \(clock.now - start) after PostgreSQL restarted")
            let healthy = try await client.execute(uri: "/health", method: .get)
            XCTAssertEqual(healthy.status, .ok, healthy.text)
            let contents = try await store.messages(conversationId: id).map(\.content)
            XCTAssertEqual(contents.filter { $0 == "one" || $0 == "three" }, ["one", "three"], "\(contents)")
            XCTAssertFalse(contents.contains("two"), "the refused message was not stored: \(contents)")
        }
        try await store.close()
    }
}
