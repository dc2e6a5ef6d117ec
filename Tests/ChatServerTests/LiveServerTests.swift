import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Over a real socket: a client that reads part of a streamed reply and hangs up leaves an
/// interrupted reply with the text it was sent, and the engine stops generating.
final class LiveServerTests: XCTestCase {
    /// Sends `request` on a fresh TCP connection, reads until `stopWhen` holds for what arrived (or
    /// the server closes, or 10 s pass without a byte), then closes the socket. Runs on its own
    /// thread: the reads block.
    static func readThenHangUp(port: Int, request: String, stopWhen: @escaping @Sendable (String) -> Bool) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                guard fd >= 0 else { continuation.resume(throwing: POSIXError(.EIO)); return }
                defer { close(fd) }
                var timeout = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard connected == 0 else { continuation.resume(throwing: POSIXError(.ECONNREFUSED)); return }
                let bytes = Array(request.utf8)
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                var received = ""
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !stopWhen(received) {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    received += String(decoding: buffer[0..<n], as: UTF8.self)
                }
                continuation.resume(returning: received)
            }
            thread.start()
        }
    }

    func testHangingUpMidStreamStoresTheInterruptedReply() async throws {
        let engine = FakeEngine(script: .init(tokenDelay: .milliseconds(50)))
        let f = try await ServerFixture(engine: engine)
        try await f.app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            let id = try await create(client, key: f.keyA)
            let long = (0..<60).map { "w\($0)" }.joined(separator: " ")
            let body = #"{"content":"\#(long)"}"#
            let request =
                "POST /api/conversations/\(id)/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(f.keyA)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            let received = try await Self.readThenHangUp(port: port, request: request) {
                $0.components(separatedBy: "event: delta").count > 4
            }
            XCTAssertTrue(received.hasPrefix("HTTP/1.1 200"), received)
            XCTAssertTrue(received.contains("text/event-stream"))
            // The reply's row exists from the start; its final write is done when the slot is released.
            try await eventually("interrupted reply stored") { await f.service.registry.runningCount == 0 }
            let reply = try await f.store.messages(conversationId: id)[1]
            XCTAssertEqual(reply.status, .interrupted)
            XCTAssertTrue(("You said: " + long).hasPrefix(reply.content), reply.content)
            XCTAssertTrue(reply.content.hasPrefix("You said: w0 w1"), "at least what the client saw: \(reply.content)")
            try await eventually("engine stopped") { engine.activeGenerations == 0 }
            XCTAssertLessThan(engine.piecesEmitted, 40, "generation stopped when the client left")
            try await eventually("slot released") { await f.service.registry.runningCount == 0 }
        }
    }

    /// A chunked body (no Content-Length to refuse up front) is refused once more than the limit
    /// has arrived, with the API's 413 body.
    func testChunkedBodyOverTheLimitIs413() async throws {
        var configuration = ServerFixture.fastConfiguration
        configuration.maxBodyBytes = 1024
        let f = try await ServerFixture(configuration: configuration)
        try await f.app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            let piece = #"{"messages":[{"role":"user","content":""# + String(repeating: "x", count: 600)
            let chunks = [piece, String(repeating: "x", count: 600), #""}]}"#]
            let body = chunks.map { String($0.utf8.count, radix: 16) + "\r\n" + $0 + "\r\n" }.joined() + "0\r\n\r\n"
            let request =
                "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(f.keyA)\r\n"
                + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            let received = try await Self.readThenHangUp(port: port, request: request) { $0.contains("request_too_large") }
            XCTAssertTrue(received.hasPrefix("HTTP/1.1 413"), received)
            XCTAssertTrue(received.contains("request_too_large"), received)
            XCTAssertTrue(received.lowercased().contains("content-type: application/json"), received)
        }
    }
}
