// The monitoring files shipped in deploy/: the Grafana dashboard and the alert rules query only
// metrics the server exports (read from a real /metrics rendering after an engine ran requests),
// the dashboard covers what operators look at per instance, and Debian's promtool accepts the
// rules and the Prometheus configuration once its template is filled in.
import Foundation
import TestSupport
import XCTest
@testable import ChatServer

final class MonitoringFilesTests: XCTestCase {
    private var deploy: URL { repositoryRoot().appendingPathComponent("deploy") }

    /// Metric families of a /metrics rendering after an engine served, refused and the HTTP layer counted requests.
    private func exportedFamilies() async throws -> Set<String> {
        SarvamMetrics.bootstrap()
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 1, queueLimit: 0))
        let stream = try h.scheduler.trySubmit(h.job("m", prompt: EngineFixture.prompt(10, seed: 3), maxTokens: 4))
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("refused", prompt: [1], maxTokens: 1)))
        h.runToCompletion()
        _ = await collect(stream)
        SarvamMetrics.recordRequest(route: "/v1/chat/completions", method: "POST", status: 429, duration: .milliseconds(1))
        let text = SarvamMetrics.render()
        var families = Set<String>()
        for line in text.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let parts = line.split(separator: " ")
            if parts.count >= 3 { families.insert(String(parts[2])) }
        }
        XCTAssertTrue(families.contains("sarvam_requests_running"), text)
        return families
    }

    /// `sarvam_…` names in a PromQL expression, histogram series reduced to their family.
    private func metricNames(_ expr: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "sarvam_[a-z0-9_]+")
        let range = NSRange(expr.startIndex..., in: expr)
        var names = Set<String>()
        for match in regex.matches(in: expr, range: range) {
            var name = String(expr[Range(match.range, in: expr)!])
            for suffix in ["_bucket", "_count", "_sum"] where name.hasSuffix(suffix) && name.hasSuffix("seconds" + suffix) {
                name.removeLast(suffix.count)
            }
            names.insert(name)
        }
        return names
    }

    private func dashboardExpressions() throws -> [(panel: String, expr: String)] {
        let data = try Data(contentsOf: deploy.appendingPathComponent("grafana/sarvam.json"))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try XCTUnwrap(json["panels"] as? [[String: Any]])
        var result: [(String, String)] = []
        for panel in panels {
            let title = panel["title"] as? String ?? "?"
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                result.append((title, try XCTUnwrap(target["expr"] as? String, "a target of \(title) without expr")))
            }
        }
        return result
    }

    func testTheDashboardQueriesOnlyExportedMetricsPerInstance() async throws {
        let exported = try await exportedFamilies()
        let expressions = try dashboardExpressions()
        XCTAssertGreaterThan(expressions.count, 10)
        var used = Set<String>()
        for (panel, expr) in expressions {
            let names = metricNames(expr)
            XCTAssertFalse(names.isEmpty && !expr.contains("up{"), "\(panel): \(expr) queries no Sarvam metric")
            for name in names {
                XCTAssertTrue(exported.contains(name), "\(panel) queries \(name), which /metrics does not export")
            }
            XCTAssertTrue(expr.contains("instance"), "\(panel): \(expr) is not per instance")
            used.formUnion(names)
        }
        // What operators look at: throughput, latency percentiles, queue, KV, prefix cache, 429s.
        for needed in [
            "sarvam_generated_tokens_total", "sarvam_time_to_first_token_seconds", "sarvam_time_per_output_token_seconds",
            "sarvam_requests_waiting", "sarvam_kv_cache_blocks_used", "sarvam_prefix_cache_hit_tokens_total",
            "sarvam_http_requests_total", "sarvam_queue_time_seconds", "sarvam_slo_tokens_total", "sarvam_slo_first_tokens_total",
        ] {
            XCTAssertTrue(used.contains(needed), "the dashboard has no panel over \(needed)")
        }
        XCTAssertTrue(expressions.contains { $0.expr.contains("histogram_quantile(0.95") }, "percentiles, not only means")
    }

    func testTheAlertRulesQueryExportedMetricsAndPromtoolAcceptsThem() async throws {
        let rules = deploy.appendingPathComponent("prometheus/sarvam-alerts.yml")
        let text = try String(contentsOf: rules, encoding: .utf8).split(separator: "\n")
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }.joined(separator: "\n")
        let exported = try await exportedFamilies()
        let names = metricNames(text)
        for name in names { XCTAssertTrue(exported.contains(name), "an alert queries \(name), which /metrics does not export") }
        for needed in ["sarvam_slo_first_tokens_total", "sarvam_slo_tokens_total", "sarvam_queue_time_seconds"] {
            XCTAssertTrue(names.contains(needed), "no alert over \(needed)")
        }
        let promtool = try Self.promtool()
        let (status, output) = try Self.run(promtool, ["check", "rules", rules.path])
        XCTAssertEqual(status, 0, output)
    }

    func testThePrometheusTemplateFilledInIsAValidConfiguration() throws {
        let promtool = try Self.promtool()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("prom-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let keyFile = folder.appendingPathComponent("key")
        try "sk-test".write(to: keyFile, atomically: true, encoding: .utf8)
        let template = try String(contentsOf: deploy.appendingPathComponent("prometheus.yml"), encoding: .utf8)
        for placeholder in ["@TARGETS@", "@METRICS_KEY_FILE@", "@RULES@"] {
            XCTAssertTrue(template.contains(placeholder), "the template lost \(placeholder)")
        }
        let filled =
            template
            .replacingOccurrences(of: "@TARGETS@", with: "\"127.0.0.1:8101\", \"127.0.0.1:8102\"")
            .replacingOccurrences(of: "@METRICS_KEY_FILE@", with: keyFile.path)
            .replacingOccurrences(of: "@RULES@", with: deploy.appendingPathComponent("prometheus/sarvam-alerts.yml").path)
        let config = folder.appendingPathComponent("prometheus.yml")
        try filled.write(to: config, atomically: true, encoding: .utf8)
        let (status, output) = try Self.run(promtool, ["check", "config", config.path])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("1 rule files found"), output)
    }

    /// Debian's promtool (package `prometheus`, installed by tools/install-deps).
    static func promtool() throws -> String {
        let path = "/usr/bin/promtool"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw XCTSkip("promtool is not installed (Debian package prometheus; tools/install-deps installs it)")
        }
        return path
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
