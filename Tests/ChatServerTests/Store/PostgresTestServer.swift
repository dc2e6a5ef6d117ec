import Foundation
import TestSupport
import XCTest

/// A throwaway PostgreSQL server from `tools/postgres-test-server` (Debian's binaries, loopback, a
/// temp folder). `shared` is started once per test process, on first use, and stopped (by the pid
/// in its pid file, through the tool) when the test bundle finishes; tests that pause the server
/// start one of their own. When PostgreSQL cannot start (not installed), `require` throws XCTSkip
/// with the tool's message.
final class PostgresTestServer: @unchecked Sendable {
    /// `postgres://sarvam@127.0.0.1:PORT/postgres`.
    let url: String
    /// The server's folder (data, log, socket, port).
    let directory: String
    private let lock = NSLock()
    private var databases = 0

    private static let sharedResult: Result<PostgresTestServer, any Error> = {
        let result = Result { try PostgresTestServer() }
        if case .success(let server) = result {
            XCTestObservationCenter.shared.addTestObserver(StopAtEnd(server: server))
        }
        return result
    }()

    /// The process's server, started on first use.
    static func shared() throws -> PostgresTestServer {
        do { return try sharedResult.get() } catch {
            throw XCTSkip("PostgreSQL could not be started, so the PostgreSQL store is not tested: \(error)")
        }
    }

    /// Starts a server of its own (the caller stops it).
    init() throws {
        let output = try Self.tool(["start"])
        var values: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        guard let url = values["url"], let directory = values["dir"] else {
            throw ToolError(description: "tools/postgres-test-server start printed no url=/dir=: \(output)")
        }
        self.url = url
        self.directory = directory
    }

    /// A new empty database on this server: its URL.
    func freshDatabase() throws -> String {
        let n = lock.withLock { () -> Int in
            databases += 1
            return databases
        }
        let output = try Self.tool(["createdb", directory, "t\(n)_\(UInt32.random(in: 0...UInt32.max))"])
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("url=") }) else {
            throw ToolError(description: "createdb printed no url=: \(output)")
        }
        return String(line.dropFirst(4))
    }

    /// Stops the server, keeping its data.
    func pause() throws { _ = try Self.tool(["pause", directory]) }
    /// Starts it again on the same port.
    func resume() throws { _ = try Self.tool(["resume", directory]) }
    /// Stops it and removes its folder.
    func stop() throws { _ = try Self.tool(["stop", directory]) }

    struct ToolError: Error, CustomStringConvertible { var description: String }

    /// Runs the tool; its output (the tool prints its values on stdout and problems on stderr,
    /// both read here), or an error with it.
    static func tool(_ arguments: [String]) throws -> String {
        let (code, output) = try Spawn.run(repositoryRoot().appendingPathComponent("tools/postgres-test-server").path, arguments)
        guard code == 0 else {
            throw ToolError(description: "tools/postgres-test-server \(arguments.joined(separator: " ")) exited with \(code): \(output)")
        }
        return output
    }

    /// Stops the shared server once every test has run.
    private final class StopAtEnd: NSObject, XCTestObservation {
        let server: PostgresTestServer
        init(server: PostgresTestServer) { self.server = server }
        func testBundleDidFinish(_ testBundle: Bundle) {
            try? server.stop()
        }
    }
}
