import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to 127.0.0.1 with blocking POSIX calls, for tests that must control
/// exactly which bytes reach the server and when (a partial header, silence, a hang-up). Use it
/// from `onThread`: its calls block.
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Closes our side (the server sees end of input).
    func hangUp() { shutdown(fd, Int32(SHUT_RDWR)) }

    /// Reads until `done` holds for what arrived, the server closes, or `timeout` seconds pass.
    /// Returns the text and whether the server closed the connection.
    func read(timeout: Double, until done: (String) -> Bool = { _ in false }) -> (text: String, closed: Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        var received = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while !done(String(decoding: received, as: UTF8.self)) {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { break }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, left * 1000)))
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (String(decoding: received, as: UTF8.self), true) }
            received += buffer[0..<n]
        }
        return (String(decoding: received, as: UTF8.self), false)
    }

    /// Seconds until the server closes the connection (reading and dropping what it sends), nil
    /// if it is still open after `timeout`.
    func secondsUntilClosed(timeout: Double) -> Double? {
        let start = Date()
        let (_, closed) = read(timeout: timeout)
        return closed ? Date().timeIntervalSince(start) : nil
    }
}

/// Runs blocking `body` on a thread of its own, off Swift's cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
