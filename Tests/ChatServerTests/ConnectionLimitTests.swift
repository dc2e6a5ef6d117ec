import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// Over real sockets: slow or silent clients are closed after the stated timeouts, streamed replies
/// are not, and connections beyond the cap are closed at once.
final class ConnectionLimitTests: XCTestCase {
    func live(
        _ f: ServerFixture, limits: ConnectionLimits, _ body: @escaping @Sendable (_ port: Int) async throws -> Void
    ) async throws {
        let app = buildApplication(f.service, listener: ListenerSettings(host: "127.0.0.1", port: 0, limits: limits))
        try await app.test(.live) { client in try await body(try XCTUnwrap(client.port)) }
    }

    /// 50 connections that send part of a request head and go silent are all closed once the
    /// header timeout has passed, and the server still answers afterwards.
    func testPartialHeadersAreClosedAfterTheHeaderTimeout() async throws {
        let f = try await ServerFixture()
        try await live(f, limits: ConnectionLimits(headerTimeout: .seconds(1), idleTimeout: .seconds(30))) { port in
            let seconds = try await onThread { () -> [Double?] in
                let start = Date()
                let connections = try (0..<50).map { _ in try RawConnection(port: port) }
                for c in connections { c.send("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ") }
                return connections.map { c in
                    let left = 6 - Date().timeIntervalSince(start)
                    return c.secondsUntilClosed(timeout: max(0, left)).map { _ in Date().timeIntervalSince(start) }
                }
            }
            let open = seconds.filter { $0 == nil }.count
            XCTAssertEqual(open, 0, "connections still open 6 s after a partial header with a 1 s header timeout")
            let closedAt = seconds.compactMap { $0 }
            XCTAssertGreaterThanOrEqual(closedAt.min() ?? 0, 0.9, "none is closed before the timeout")
            XCTAssertLessThan(closedAt.max() ?? 99, 3, "all are closed soon after the 1 s timeout: \(closedAt)")
            print("partial headers: \(closedAt.count) of 50 closed, after \(closedAt.min() ?? 0)...\(closedAt.max() ?? 0) s")
            let after = try await onThread { () -> String in
                let c = try RawConnection(port: port)
                c.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return c.read(timeout: 5) { $0.contains("\"status\"") }.text
            }
            XCTAssertTrue(after.hasPrefix("HTTP/1.1 200"), after)
        }
    }

    /// A keep-alive connection may stay silent between requests for the idle timeout (longer than
    /// the header timeout), then it is closed; a trickled head on it gets the header timeout.
    func testKeepAliveIdleTimeout() async throws {
        let f = try await ServerFixture()
        try await live(f, limits: ConnectionLimits(headerTimeout: .milliseconds(600), idleTimeout: .seconds(2))) { port in
            let (first, second, idleClose) = try await onThread { () -> (String, String, Double?) in
                let c = try RawConnection(port: port)
                c.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let first = c.read(timeout: 5) { $0.contains("\"status\"") }.text
                Thread.sleep(forTimeInterval: 1.2)  // past the header timeout, within the idle timeout
                c.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let second = c.read(timeout: 5) { $0.contains("\"status\"") }.text
                let start = Date()
                let closed = c.secondsUntilClosed(timeout: 6)
                return (first, second, closed.map { _ in Date().timeIntervalSince(start) })
            }
            XCTAssertTrue(first.hasPrefix("HTTP/1.1 200"), first)
            XCTAssertTrue(second.hasPrefix("HTTP/1.1 200"), "a keep-alive connection survives a pause shorter than the idle timeout")
            let closedAfter = try XCTUnwrap(idleClose, "an idle keep-alive connection must be closed after the idle timeout")
            XCTAssertGreaterThan(closedAfter, 1.7)
            XCTAssertLessThan(closedAfter, 4)

            // Keep-alive, then the next head trickles in: closed at the header timeout, not the idle one.
            let trickled = try await onThread { () -> Double? in
                let c = try RawConnection(port: port)
                c.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                _ = c.read(timeout: 5) { $0.contains("\"status\"") }
                c.send("GET /health HTTP/1.1\r\n")
                let start = Date()
                return c.secondsUntilClosed(timeout: 6).map { _ in Date().timeIntervalSince(start) }
            }
            let t = try XCTUnwrap(trickled, "a partial head on a keep-alive connection must be closed")
            XCTAssertLessThan(t, 1.6, "the header timeout (0.6 s) applies once the next request has begun, not the idle one (2 s)")
        }
    }

    /// A streamed reply that lasts several idle timeouts is delivered whole; so is a non-streamed
    /// one that takes longer than the idle timeout to compute.
    func testLongRepliesAreNotCutByTheTimeouts() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(100)))
        let f = try await ServerFixture(engine: engine)
        let words = (0..<30).map { "w\($0)" }.joined(separator: " ")
        try await live(f, limits: ConnectionLimits(headerTimeout: .milliseconds(500), idleTimeout: .milliseconds(800))) { port in
            for stream in [true, false] {
                let body = #"{"stream":\#(stream),"messages":[{"role":"user","content":"\#(words)"}]}"#
                let request =
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(f.keyA)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                let (text, closed) = try await onThread { () -> (String, Bool) in
                    let c = try RawConnection(port: port)
                    c.send(request)
                    return c.read(timeout: 20) { stream ? $0.contains("data: [DONE]") : $0.contains("\"usage\"") }
                }
                XCTAssertFalse(closed, "stream \(stream): the connection was closed mid-reply: \(text.suffix(300))")
                XCTAssertTrue(text.hasPrefix("HTTP/1.1 200"), text)
                XCTAssertTrue(text.contains("w29"), "stream \(stream): the whole reply arrived")
            }
        }
    }

    /// Beyond `maxConnections` open connections a new one is closed at once; when one of the open
    /// ones goes, a new connection is served again.
    func testConnectionsBeyondTheCapAreClosed() async throws {
        let f = try await ServerFixture()
        try await live(f, limits: ConnectionLimits(headerTimeout: .seconds(20), idleTimeout: .seconds(20), maxConnections: 5)) { port in
            let (extraClosedIn, heldOpen, servedAfter) = try await onThread { () -> (Double?, Bool, String) in
                let held = try (0..<5).map { _ in try RawConnection(port: port) }
                Thread.sleep(forTimeInterval: 0.3)  // let the server accept them all
                let extra = try RawConnection(port: port)
                extra.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let extraClosedIn = extra.secondsUntilClosed(timeout: 3)
                // The held ones are still open: a request on one is answered.
                held[0].send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let heldOpen = held[0].read(timeout: 5) { $0.contains("\"status\"") }.text.hasPrefix("HTTP/1.1 200")
                held[1].hangUp()
                Thread.sleep(forTimeInterval: 0.5)
                let next = try RawConnection(port: port)
                next.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return (extraClosedIn, heldOpen, next.read(timeout: 5) { $0.contains("\"status\"") }.text)
            }
            let closedIn = try XCTUnwrap(extraClosedIn, "the sixth connection must be closed")
            XCTAssertLessThan(closedIn, 1)
            XCTAssertTrue(heldOpen)
            XCTAssertTrue(servedAfter.hasPrefix("HTTP/1.1 200"), "a place freed is reused: \(servedAfter)")
        }
    }
}
