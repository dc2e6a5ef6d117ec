import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import XCTest

/// `/metrics`: routes labelled by the router's templates (no ids, no client-chosen paths), served
/// to the admin key only, or keyless on the separate metrics listener.
final class MetricsEndpointTests: XCTestCase {
    static let adminKey = "sk-admin-metrics-test"

    func fixture() async throws -> ServerFixture {
        SarvamMetrics.bootstrap()
        let f = try await ServerFixture()
        _ = try await Accounts(store: f.store).bootstrapAdmin(presetKey: Self.adminKey)
        return f
    }

    /// The HTTP series of the Prometheus text: every line of `sarvam_http_…` up to its value.
    static func httpSeries(_ text: String) -> Set<String> {
        Set(
            text.split(separator: "\n").filter { $0.hasPrefix("sarvam_http_") }.map { line in
                String(line[..<(line.lastIndex(of: " ") ?? line.endIndex)])
            })
    }

    func testManyUnknownPathsDoNotGrowMetrics() async throws {
        let f = try await fixture()
        try await f.test { client in
            func probe(_ i: Int) async throws {
                let r1 = try await client.send(.get, "/no-such-page-\(i)/\(UUID().uuidString)", key: nil)
                XCTAssertEqual(r1.status, .notFound)
                let r2 = try await client.send(.get, "/v1/unknown-\(i)", key: f.keyA)
                XCTAssertEqual(r2.status, .notFound)
                let r3 = try await client.send(.get, "/api/conversations/conv_\(String(i, radix: 16))x\(i)", key: nil)
                XCTAssertEqual(r3.status, .unauthorized)
                let r4 = try await client.execute(uri: "/odd-method-\(i)", method: .init("BREW")!, headers: [:], body: nil)
                XCTAssertEqual(r4.status, .notFound)
            }
            try await probe(0)
            let before = SarvamMetrics.render()
            for i in 1...300 { try await probe(i) }
            let after = SarvamMetrics.render()
            XCTAssertEqual(Self.httpSeries(after), Self.httpSeries(before), "new series appeared for new paths")
            print("1,200 requests to invented paths: /metrics \(before.utf8.count) -> \(after.utf8.count) bytes")
            XCTAssertLessThan(after.utf8.count, before.utf8.count + 2000, "the text grew by \(after.utf8.count - before.utf8.count) bytes")
            XCTAssertTrue(after.contains(#"sarvam_http_requests_total{route="unknown",method="GET",status="404"}"#), after)
            XCTAssertTrue(after.contains(#"route="/api/conversations/{id}",method="GET",status="401""#), after)
            XCTAssertTrue(after.contains(#"route="unknown",method="OTHER",status="404""#), after)
            XCTAssertFalse(after.contains("no-such-page"))
        }
    }

    func testConversationIdsNeverAppearInMetrics() async throws {
        let f = try await fixture()
        try await f.test { client in
            let id = try await create(client, key: f.keyA)
            let got = try await client.send(.get, "/api/conversations/\(id)", key: f.keyA)
            XCTAssertEqual(got.status, .ok)
            let posted = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content":"hi"}"#)
            XCTAssertEqual(posted.status, .ok)
            let renamed = try await client.send(.patch, "/api/conversations/\(id)", key: f.keyA, json: #"{"title":"t"}"#)
            XCTAssertEqual(renamed.status, .ok)
            let other = try await client.send(.get, "/api/conversations/\(id)", key: f.keyB)
            XCTAssertEqual(other.status, .notFound)
            let metrics = try await client.send(.get, "/metrics", key: Self.adminKey)
            XCTAssertEqual(metrics.status, .ok)
            XCTAssertFalse(metrics.text.contains(id), "a conversation id is in /metrics")
            XCTAssertFalse(metrics.text.contains(String(id.dropFirst("conv_".count))))
            for route in ["/api/conversations/{id}", "/api/conversations/{id}/messages", "/api/conversations"] {
                XCTAssertTrue(metrics.text.contains(#"route="\#(route)""#), "missing \(route) in:\n\(metrics.text)")
            }
        }
    }

    func testMetricsNeedTheAdminKey() async throws {
        let f = try await fixture()
        try await f.test { client in
            let anonymous = try await client.send(.get, "/metrics", key: nil)
            XCTAssertEqual(anonymous.status, .unauthorized)
            XCTAssertEqual(anonymous.error["code"] as? String, "invalid_api_key")
            XCTAssertFalse(anonymous.text.contains("sarvam_"))
            let user = try await client.send(.get, "/metrics", key: f.keyA)
            XCTAssertEqual(user.status, .forbidden)
            XCTAssertFalse(user.text.contains("sarvam_"))
            let admin = try await client.send(.get, "/metrics", key: Self.adminKey)
            XCTAssertEqual(admin.status, .ok)
            XCTAssertEqual(admin.headers[.contentType], SarvamMetrics.contentType)
            XCTAssertTrue(admin.text.contains("sarvam_process_resident_memory_bytes"), admin.text)
        }
    }

    /// The metrics listener serves `/metrics` without a key, and nothing else.
    func testMetricsListenerServesWithoutAKey() async throws {
        SarvamMetrics.bootstrap()
        let app = buildMetricsApplication(address: HostAndPort(host: "127.0.0.1", port: 0), logger: Logger(label: "test"))
        try await app.test(.live) { client in
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            XCTAssertEqual(metrics.status, .ok)
            XCTAssertTrue(String(buffer: metrics.body).contains("sarvam_process_resident_memory_bytes"))
            for path in ["/health", "/v1/models"] {
                let r = try await client.execute(uri: path, method: .get)
                XCTAssertEqual(r.status, .notFound, path)
            }
        }
    }
}
