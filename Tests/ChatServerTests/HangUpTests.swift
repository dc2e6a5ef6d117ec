import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// A client that hangs up on a non-streaming chat completion stops its generation: nothing is
/// written to such a client until the end, so only the connection can tell.
final class HangUpTests: XCTestCase {
    func testNonStreamingCompletionStopsWhenTheClientHangsUp() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(50)))
        let f = try await ServerFixture(engine: engine)
        let words = (0..<80).map { "w\($0)" }.joined(separator: " ")
        let body = #"{"messages":[{"role":"user","content":"\#(words)"}]}"#
        let request =
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(f.keyA)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        try await f.app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            let connection = try await onThread { () -> RawConnection in
                let c = try RawConnection(port: port)
                c.send(request)
                return c
            }
            try await eventually("generation under way") { engine.piecesEmitted >= 5 }
            XCTAssertEqual(engine.cancelledGenerations, 0)
            connection.hangUp()
            let atHangUp = engine.piecesEmitted
            try await eventually("generation cancelled") { engine.cancelledGenerations == 1 }
            try await eventually("engine stopped") { engine.activeGenerations == 0 }
            // One token step (50 ms) at most may finish after the hang-up.
            XCTAssertLessThanOrEqual(engine.piecesEmitted, atHangUp + 1, "tokens generated after the client left")
            try await eventually("slot released") { await f.service.registry.runningCount == 0 }
            withExtendedLifetime(connection) {}
        }
    }

    /// A client that stays gets its whole non-streamed reply (the hang-up watch does not fire on a
    /// request whose body has simply ended).
    func testNonStreamingCompletionCompletesForAClientThatWaits() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(5)))
        let f = try await ServerFixture(engine: engine)
        try await f.app.test(.live) { client in
            for _ in 0..<3 {
                let r = try await client.send(
                    .post, "/v1/chat/completions", key: f.keyA, json: #"{"messages":[{"role":"user","content":"a b c"}]}"#)
                XCTAssertEqual(r.status, .ok, r.text)
                XCTAssertEqual(
                    ((r.object["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String,
                    "You said: a b c")
            }
            XCTAssertEqual(engine.cancelledGenerations, 0)
        }
    }
}
