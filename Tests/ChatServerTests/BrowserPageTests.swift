import Foundation
import TestSupport
import XCTest

/// The chat page in a real browser: `Tests/Browser/page_test.py` drives headless Chromium through
/// Selenium against the real `sarvam serve` with the default model (sign in, stream, stop, code
/// block, regenerate, reload, long paste, rename, delete, sign out), one screenshot per step in
/// `.build/artifacts/BrowserPageTests`. The user and key come from the `sarvam users` and `sarvam keys`
/// commands, as an operator makes them.
final class BrowserPageTests: XCTestCase {
    /// Small, so a paste can overflow it and every reply stays short.
    static let context = 512

    func testThePageInChromium() async throws {
        let chromium = try Self.required("chromium", "/usr/bin/chromium")
        let chromedriver = try Self.required("chromium-driver", "/usr/bin/chromedriver")
        let python = try Self.required("python3", WebPageTests.executable(named: "python3")?.path ?? "/usr/bin/python3")
        let (hasSelenium, _) = try Spawn.run(python, ["-c", "import selenium"])
        guard hasSelenium == 0 else { throw XCTSkip("the Python selenium package is missing (tools/install-deps installs it)") }
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            return XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
        }

        let artifacts = repositoryRoot().appendingPathComponent(".build/artifacts/BrowserPageTests")
        try? FileManager.default.removeItem(at: artifacts)
        try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-browser-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: data) }

        let (added, addOutput) = try Self.sarvam(["users", "add", "browser", "--data-dir", data.path])
        XCTAssertEqual(added, 0, addOutput)
        let (passwordSet, passwordOutput) = try Self.sarvam(["users", "password", "browser", "--data-dir", data.path])
        XCTAssertEqual(passwordSet, 0, passwordOutput)
        let password = try XCTUnwrap(passwordOutput.split(separator: "\n").last.map(String.init), passwordOutput)
        let (created, keyOutput) = try Self.sarvam(["keys", "create", "browser", "--data-dir", data.path])
        XCTAssertEqual(created, 0, keyOutput)
        let key = try XCTUnwrap(
            keyOutput.split(separator: "\n").last.map(String.init).flatMap { $0.hasPrefix("sk-") ? $0 : nil }, keyOutput)

        let server = try ServerProcess(
            arguments: [
                "--model", model, "--data-dir", data.path, "--context", "\(Self.context)", "--threads", "2", "--max-sequences", "2",
                "--kv-cache-mb", "64", "--metrics-address", "127.0.0.1:0",
            ],
            environment: ["SARVAM_LOG_LEVEL": "warning"], logPath: artifacts.appendingPathComponent("server.log").path)
        defer { server.stop() }
        try await server.waitUntilReady()
        let metricsLine = try XCTUnwrap(server.log.range(of: "Metrics (no key) on "), "no metrics listener in:\n\(server.log)")
        let metrics = String(server.log[metricsLine.upperBound...].prefix { !$0.isWhitespace })

        let started = Date()
        let (status, output) = try Spawn.run(
            python,
            [
                repositoryRoot().appendingPathComponent("Tests/Browser/page_test.py").path, "--url", "http://127.0.0.1:\(server.port)",
                "--key", key, "--user", "browser", "--password", password, "--metrics", metrics, "--context", "\(Self.context)",
                "--artifacts", artifacts.path, "--chromium", chromium, "--chromedriver", chromedriver,
            ])
        try output.write(to: artifacts.appendingPathComponent("page_test.log"), atomically: true, encoding: .utf8)
        let seconds = String(format: "%.0f", Date().timeIntervalSince(started))
        print("BrowserPageTests: \(seconds) s in the browser; \(artifacts.path)\n\(output)")
        XCTAssertEqual(status, 0, "the browser test failed (screenshots and logs in \(artifacts.path)):\n\(output)\n\(server.log)")
        XCTAssertTrue(server.isRunning, "the server died:\n\(server.log)")
    }

    /// Runs the `sarvam` command line without the caller's `SARVAM_*` variables (as the server runs):
    /// its exit code and output.
    static func sarvam(_ arguments: [String]) throws -> (Int32, String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-cli-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SARVAM_") }
        let pid = try Spawn.start(try ServerProcess.binary().path, arguments, environment: environment, log: log)
        let code = Spawn.wait(pid)
        return (code, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// `path` when it is an executable, else a skip naming the Debian package that brings it.
    static func required(_ package: String, _ path: String) throws -> String {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw XCTSkip("\(path) is missing: install the Debian package \(package) (tools/install-deps does)")
        }
        return path
    }
}
