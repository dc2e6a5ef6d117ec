// deploy/compose.yaml cannot run here (no Docker engine), so it is checked against tools/fleet,
// which runs: the same services, the same ports (derived the same way from nginx's port), the
// same `sarvam serve` settings and the same nginx and Prometheus templates.
import Foundation
import TestSupport
import XCTest

final class ComposeFileTests: XCTestCase {
    private var root: URL { repositoryRoot() }

    /// The compose file as JSON objects, read with PyYAML (tools/install-deps installs it).
    private func compose() throws -> [String: Any] {
        let path = root.appendingPathComponent("deploy/compose.yaml").path
        let (status, output) = try MonitoringFilesTests.run(
            "/usr/bin/env", ["python3", "-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", path])
        if status != 0 && output.contains("No module named 'yaml'") {
            throw XCTSkip("PyYAML is missing (tools/install-deps installs it): \(output)")
        }
        XCTAssertEqual(status, 0, output)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
    }

    /// `name=$((port + N))` in tools/fleet: the offset of a port from nginx's.
    private func fleetOffset(_ name: String, in fleet: String) throws -> Int {
        let regex = try NSRegularExpression(pattern: "\(name)=\\$\\(\\(port \\+ ([0-9]+)\\)\\)")
        let match = try XCTUnwrap(regex.firstMatch(in: fleet, range: NSRange(fleet.startIndex..., in: fleet)), "tools/fleet has no \(name)")
        return Int(fleet[Range(match.range(at: 1), in: fleet)!])!
    }

    func testComposeHasTheServicesPortsAndSettingsOfToolsFleet() throws {
        let fleet = try String(contentsOf: root.appendingPathComponent("tools/fleet"), encoding: .utf8)
        let services = try XCTUnwrap(try compose()["services"] as? [String: [String: Any]])
        XCTAssertEqual(Set(services.keys), ["postgres", "sarvam-1", "sarvam-2", "nginx", "prometheus"])

        // Ports: nginx P (tools/fleet's default), instances P+i, PostgreSQL and Prometheus at fleet's offsets.
        XCTAssertTrue(fleet.contains("|| echo 8080"), "tools/fleet's default nginx port")
        let nginxPort = 8080
        let postgresPort = nginxPort + (try fleetOffset("pg_port", in: fleet))
        let prometheusPort = nginxPort + (try fleetOffset("prom_port", in: fleet))
        XCTAssertEqual(services["nginx"]?["ports"] as? [String], ["\(nginxPort):\(nginxPort)"])
        XCTAssertEqual(services["prometheus"]?["ports"] as? [String], ["\(prometheusPort):\(prometheusPort)"])
        XCTAssertEqual(services["postgres"]?["command"] as? [String], ["postgres", "-p", "\(postgresPort)"])
        XCTAssertTrue(fleet.contains("local p=$((port + i))"), "tools/fleet puts instance i on nginx's port + i")

        // Each instance: `sarvam serve` on its port with the shared PostgreSQL store, as tools/fleet starts it.
        XCTAssertTrue(fleet.contains(#"args=(serve --host 127.0.0.1 --port "$p" --data-dir "$d" --model "$model" --store "$store_url")"#))
        XCTAssertTrue(fleet.contains(#"store_url="postgres://sarvam@127.0.0.1:$pg_port/sarvam""#))
        for i in 1...2 {
            let command = try XCTUnwrap(services["sarvam-\(i)"]?["command"] as? [String])
            func value(_ flag: String) -> String? { command.firstIndex(of: flag).map { command[$0 + 1] } }
            XCTAssertEqual(command.first, "serve")
            XCTAssertEqual(value("--port"), "\(nginxPort + i)")
            XCTAssertEqual(value("--store"), "postgres://sarvam@postgres:\(postgresPort)/sarvam")
            XCTAssertNotNil(value("--model"))
            XCTAssertNotNil(value("--data-dir"))
        }

        // nginx and Prometheus use the same templates with the same placeholders.
        let nginx = try XCTUnwrap(services["nginx"])
        XCTAssertTrue((nginx["volumes"] as? [String] ?? []).contains { $0.hasPrefix("./nginx.conf:") })
        let nginxCommand = (nginx["command"] as? [String] ?? []).joined(separator: " ")
        for placeholder in ["@LISTEN@", "@SERVERS@", "@PREFIX@"] {
            XCTAssertTrue(nginxCommand.contains(placeholder), "compose fills \(placeholder)")
            XCTAssertTrue(fleet.contains(placeholder.dropFirst().dropLast() + " "), "tools/fleet fills \(placeholder)")
        }
        XCTAssertTrue(nginxCommand.contains("sarvam-1:8081") && nginxCommand.contains("sarvam-2:8082"))
        let prometheus = try XCTUnwrap(services["prometheus"])
        let volumes = prometheus["volumes"] as? [String] ?? []
        XCTAssertTrue(volumes.contains { $0.hasPrefix("./prometheus.yml:") })
        XCTAssertTrue(volumes.contains { $0.hasPrefix("./prometheus/sarvam-alerts.yml:") })
        let prometheusCommand = (prometheus["entrypoint"] as? [String] ?? []).joined(separator: " ")
        for placeholder in ["@TARGETS@", "@METRICS_KEY_FILE@", "@RULES@"] {
            XCTAssertTrue(prometheusCommand.contains(placeholder), "compose fills \(placeholder)")
        }
        XCTAssertTrue(fleet.contains("deploy/prometheus.yml") && fleet.contains("deploy/nginx.conf"))
    }
}
