import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The published contract (`docs/openapi.yaml`) against the server: `sarvam serve` with the real
/// default model, and schemathesis generating requests from the contract for every operation and
/// checking every response: no 5xx, each status and content type one the contract lists, each JSON
/// body valid under its schema. The hooks (`tools/schemathesis/sarvam_hooks.py`) cap generated
/// replies at 3 tokens so the run fits in minutes.
final class ContractFuzzTests: XCTestCase {
    /// Generated cases per operation (operations without parameters get one or a few).
    static let examplesPerOperation = 80
    static let checks = ["not_a_server_error", "response_schema_conformance", "status_code_conformance", "content_type_conformance"]

    /// schemathesis as `tools/install-deps` installs it, or `SARVAM_SCHEMATHESIS`.
    static func schemathesis() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let path = env["SARVAM_SCHEMATHESIS"] { return path }
        let cache = env["SARVAM_CACHE"] ?? (NSHomeDirectory() + "/.cache/sarvam")
        let path = cache + "/schemathesis-venv/bin/st"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    func testGeneratedRequestsFollowTheContract() async throws {
        guard let st = Self.schemathesis() else {
            throw XCTSkip("schemathesis is not installed (tools/install-deps puts it in ~/.cache/sarvam/schemathesis-venv)")
        }
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
            return
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-contract-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let key = "sk-contract-" + UUID().uuidString.lowercased()
        let server = try ServerProcess(
            arguments: [
                "--model", model, "--data-dir", folder.path, "--context", "1024", "--threads", "2", "--kv-cache-mb", "96",
                "--max-sequences", "4",
            ],
            environment: ["SARVAM_ADMIN_KEY": key], logPath: folder.appendingPathComponent("server.log").path)
        defer { server.stop() }
        try await server.waitUntilReady()

        // The served contract is the file in docs/.
        let (status, served) = try await HTTP.request(port: server.port, "GET", "/openapi.yaml")
        XCTAssertEqual(status, 200)
        let published = try String(contentsOf: repositoryRoot().appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
        XCTAssertEqual(served, published, "GET /openapi.yaml serves docs/openapi.yaml")

        let root = repositoryRoot()
        let log = folder.appendingPathComponent("schemathesis.log").path
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONPATH"] = root.appendingPathComponent("tools/schemathesis").path
        environment["SCHEMATHESIS_HOOKS"] = "sarvam_hooks"
        environment["NO_COLOR"] = "1"
        // Hypothesis keeps a cache folder; in the test's folder, not the repository.
        environment["HYPOTHESIS_STORAGE_DIRECTORY"] = folder.appendingPathComponent("hypothesis").path
        let arguments = [
            "run", root.appendingPathComponent("docs/openapi.yaml").path, "--experimental=openapi-3.1",
            "--base-url", "http://127.0.0.1:\(server.port)", "-H", "Authorization: Bearer \(key)",
            "--checks", Self.checks.joined(separator: ","),
            "--hypothesis-max-examples", String(Self.examplesPerOperation), "--hypothesis-seed", "20261205",
            "--hypothesis-database", "none", "--hypothesis-suppress-health-check", "all", "--hypothesis-deadline", "120000",
            "--request-timeout", "120000", "--no-color",
        ]
        let pid = try Spawn.start(st, arguments, environment: environment, log: log)
        let deadline = ContinuousClock.now + .seconds(1500)
        var code: Int32?
        while code == nil {
            code = Spawn.ended(pid)
            if code == nil && ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                code = Spawn.wait(pid)
                XCTFail("schemathesis ran past 25 minutes")
            }
            if code == nil { try await Task.sleep(for: .milliseconds(500)) }
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let figures = Self.figures(output)
        print("ContractFuzzTests: \(figures.operations) operations, \(figures.cases) cases, \(figures.failures) failures")
        for check in Self.checks {
            XCTAssertNotNil(figures.checks[check], "\(check) did not run:\n\(output.suffix(4000))")
        }
        XCTAssertEqual(code, 0, "schemathesis reported failures:\n\(output.suffix(12000))")
        XCTAssertEqual(figures.failures, 0, output.suffix(12000).description)
        XCTAssertGreaterThanOrEqual(figures.operations, 30, "every operation of the contract was exercised")
        XCTAssertGreaterThanOrEqual(figures.cases, 1000, "at least 1,000 generated cases")
        XCTAssertTrue(server.isRunning, "the server survived:\n\(server.log.suffix(4000))")
    }

    /// From schemathesis 3's summary: operations run, cases (responses checked by
    /// not_a_server_error), failed checks, and each check's passed/total.
    static func figures(_ output: String) -> (operations: Int, cases: Int, failures: Int, checks: [String: (Int, Int)]) {
        var checks: [String: (Int, Int)] = [:]
        var operations = Set<String>()
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ")
            if let method = words.first, ["GET", "POST", "PATCH", "DELETE", "PUT"].contains(String(method)), words.count >= 2 {
                operations.insert("\(method) \(words[1])")
            }
            // "    not_a_server_error      1005 / 1005 passed          PASSED"
            if words.count >= 5, words[2] == "/", let passed = Int(words[1]), let total = Int(words[3]), words[4] == "passed" {
                checks[String(words[0])] = (passed, total)
            }
        }
        let failures = checks.values.reduce(0) { $0 + ($1.1 - $1.0) }
        return (operations.count, checks["not_a_server_error"]?.1 ?? 0, failures, checks)
    }
}
