import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The `sarvam` binary of this build, run as `sarvam serve` on a free loopback port: what a
/// deployment runs, so a test can kill it like a crash would. Its output goes to a log file.
final class ServerProcess: @unchecked Sendable {
    let pid: pid_t
    let logPath: String
    private(set) var port = 0
    private let lock = NSLock()
    private var exitCode: Int32?

    /// The `sarvam` executable beside the test bundle (the same build folder).
    static func binary() throws -> URL {
        let folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for candidate in [folder, folder.deletingLastPathComponent()] {
            let url = candidate.appendingPathComponent("sarvam")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        let built = repositoryRoot().appendingPathComponent(".build/release/sarvam")
        guard FileManager.default.isExecutableFile(atPath: built.path) else {
            throw StringError("no sarvam binary beside \(folder.path) or at \(built.path): build with `swift build -c release --build-tests`")
        }
        return built
    }

    /// Starts `sarvam serve ARGUMENTS --host 127.0.0.1 --port 0` and waits for its "listening" line.
    init(arguments: [String], environment: [String: String] = [:], logPath: String, timeout: Duration = .seconds(60)) throws {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SARVAM_") }
        env.merge(environment) { $1 }
        self.logPath = logPath
        pid = try Spawn.start(
            try Self.binary().path, ["serve", "--host", "127.0.0.1", "--port", "0"] + arguments, environment: env, log: logPath)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = log
            if let said = text.range(of: "is listening on "), let range = text[said.upperBound...].range(of: "://127.0.0.1:") {
                port = Int(text[range.upperBound...].prefix { $0.isNumber }) ?? 0
                return
            }
            guard isRunning else { throw StringError("sarvam serve exited early:\n\(text)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        killHard()
        throw StringError("sarvam serve did not listen within \(timeout):\n\(log)")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    var isRunning: Bool {
        lock.withLock {
            if exitCode == nil { exitCode = Spawn.ended(pid) }
            return exitCode == nil
        }
    }

    /// Exit code, or 128 + the signal that ended it (waits for the end).
    func waitForExit() -> Int32 {
        lock.withLock {
            if exitCode == nil { exitCode = Spawn.wait(pid) }
            return exitCode ?? -1
        }
    }

    /// Polls `/health` until 200 (the model is loaded).
    func waitUntilReady(timeout: Duration = .seconds(180)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let (status, _) = try? await HTTP.request(port: port, "GET", "/health"), status == 200 { return }
            guard isRunning else { throw StringError("sarvam serve exited:\n\(log)") }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw StringError("sarvam serve was not ready within \(timeout):\n\(log)")
    }

    /// SIGKILL, as a crash or the OOM killer would: nothing runs in the process after it.
    func killHard() {
        if isRunning { kill(pid, SIGKILL) }
        _ = waitForExit()
    }

    /// SIGTERM and wait (the graceful path), SIGKILL if that takes over 20 s.
    func stop() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        killHard()
    }
}

struct StringError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A blocking HTTP/1.1 client over a plain socket (one request per connection), for servers in
/// another process.
enum HTTP {
    /// Sends a request with `Connection: close` and returns the status and body once the server closes.
    static func request(
        port: Int, _ method: String, _ path: String, key: String? = nil, json: String? = nil
    ) async throws -> (Int, String) {
        let received = try await LiveServerTests.readThenHangUp(port: port, request: raw(method, path, key: key, json: json)) { _ in false }
        return parse(received)
    }

    static func raw(_ method: String, _ path: String, key: String?, json: String?) -> String {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if let key { request += "Authorization: Bearer \(key)\r\n" }
        if let json { request += "Content-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n" }
        return request + "\r\n" + (json ?? "")
    }

    /// Status and body of a raw response (a chunked body is left as it came; SSE frames survive it).
    static func parse(_ received: String) -> (Int, String) {
        let status = Int(received.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
        let body = received.range(of: "\r\n\r\n").map { String(received[$0.upperBound...]) } ?? ""
        return (status, body)
    }
}
