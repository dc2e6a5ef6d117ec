import ChatServer
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import XCTest

/// `"model": "auto"` over HTTP with two fake models of different sizes: the tier follows the
/// request (code to heavy, a question to light), a conversation keeps its tier, an overloaded heavy
/// tier sends everything light until it recovers, and the response names the tier.
final class AutoModelTests: XCTestCase {
    func testAutoRoutesByRequestAndDegradesUnderLoad() async throws {
        SarvamMetrics.bootstrap()
        let light = FakeEngine(id: "small", parameters: 500_000_000)
        let heavy = FakeEngine(id: "large", parameters: 1_500_000_000)
        heavy.currentLoad = TierLoad(predictedWaitSeconds: 0, stepSecondsP95: 0.05)
        let f = try await ServerFixture(engine: light, catalog: EngineCatalog(engines: [light, heavy]))
        @Sendable func chat(_ content: String) -> String {
            let escaped = String(data: try! JSONEncoder().encode(content), encoding: .utf8)!
            return #"{"model": "auto", "messages": [{"role": "user", "content": \#(escaped)}]}"#
        }
        try await f.test { client in
            let me = try await client.send(.get, "/api/me", key: f.keyA)
            XCTAssertEqual(me.object["models"] as? [String], ["auto", "small", "large"], "auto first: the page's default")
            let question = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat("What is the capital of France?"))
            XCTAssertEqual(question.status, .ok, question.text)
            XCTAssertEqual(question.object["model"] as? String, "small")
            XCTAssertEqual(question.headers[HTTPField.Name("X-Sarvam-Tier")!], "light")
            XCTAssertEqual(question.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "general")

            let code = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat("def f(x):\n    return x\nprint(f(1))"))
            XCTAssertEqual(code.object["model"] as? String, "large")
            XCTAssertEqual(code.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "code")

            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            headers[.authorization] = "Bearer \(f.keyA)"
            headers[HTTPField.Name("X-Sarvam-Think-Harder")!] = "1"
            let harder = try await client.execute(
                uri: "/v1/chat/completions", method: .post, headers: headers, body: ByteBuffer(string: chat("Hello")))
            XCTAssertEqual(harder.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "think_harder")

            // A conversation on auto: its first code turn goes heavy, then it stays heavy for a plain question.
            let created = try await client.send(.post, "/api/conversations", key: f.keyA, json: #"{"model": "auto"}"#)
            XCTAssertEqual(created.status, .created, created.text)
            let id = try XCTUnwrap(created.object["id"] as? String)
            let t1 = try await client.send(
                .post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content": "int main() {\n  return 0;\n}"}"#)
            XCTAssertEqual(t1.headers[HTTPField.Name("X-Sarvam-Tier")!], "heavy", t1.text)
            let t2 = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content": "Thanks!"}"#)
            XCTAssertEqual(t2.headers[HTTPField.Name("X-Sarvam-Tier")!], "heavy")
            XCTAssertEqual(t2.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "conversation")
            let stored = try await f.store.messages(conversationId: id)
            XCTAssertEqual(stored.filter { $0.role == .assistant }.map(\.model), ["large", "large"])

            // The heavy tier overloaded: code and the heavy conversation go light, said so.
            heavy.currentLoad = TierLoad(predictedWaitSeconds: 5, stepSecondsP95: 0.3)
            let degraded = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: chat("```\nx = 1\n```"))
            XCTAssertEqual(degraded.object["model"] as? String, "small")
            XCTAssertEqual(degraded.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "degraded")
            let t3 = try await client.send(.post, "/api/conversations/\(id)/messages", key: f.keyA, json: #"{"content": "More?"}"#)
            XCTAssertEqual(t3.headers[HTTPField.Name("X-Sarvam-Tier")!], "light")
            XCTAssertEqual(t3.headers[HTTPField.Name("X-Sarvam-Tier-Reason")!], "degraded")
            // A named model is never rerouted.
            let named = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA,
                json: #"{"model": "large", "messages": [{"role": "user", "content": "hi"}]}"#)
            XCTAssertEqual(named.object["model"] as? String, "large")
            XCTAssertNil(named.headers[HTTPField.Name("X-Sarvam-Tier")!])
        }
        let metrics = SarvamMetrics.render()
        XCTAssertTrue(metrics.contains(#"sarvam_routing_decisions_total{reason="degraded",tier="light"}"#)
            || metrics.contains(#"sarvam_routing_decisions_total{tier="light",reason="degraded"}"#), "routing decisions are counted")
    }

    /// With an overflow model set, `auto` goes there only while both local tiers are saturated; the
    /// response names it as the tier, with reason `overflow`, and the decision is counted. A third
    /// fake model stands in for the upstream's `NAME/MODEL` (the catalogue resolves both alike).
    func testAutoOverflowsWhenEveryLocalTierIsSaturated() async throws {
        SarvamMetrics.bootstrap()
        let light = FakeEngine(id: "small", parameters: 500_000_000)
        let heavy = FakeEngine(id: "large", parameters: 1_500_000_000)
        let remote = FakeEngine(id: "up/remote")
        let calm = TierLoad(predictedWaitSeconds: 0, stepSecondsP95: 0.05)
        light.currentLoad = calm
        heavy.currentLoad = calm
        let f = try await ServerFixture(
            engine: light, catalog: EngineCatalog(engines: [light, heavy, remote]),
            tierRouting: .init(ttftTarget: 2, itlTarget: 0.2, overflowModel: "up/remote"))
        let before = Self.routing(SarvamMetrics.render(), tier: "up/remote", reason: "overflow")
        let code = #"{"model": "auto", "messages": [{"role": "user", "content": "Write a function that adds two numbers."}]}"#
        let tier = HTTPField.Name("X-Sarvam-Tier")!
        let reason = HTTPField.Name("X-Sarvam-Tier-Reason")!
        try await f.test { client in
            let calmReply = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: code)
            XCTAssertEqual(calmReply.headers[tier], "heavy")
            // The heavy tier breaking the SLO, the light one with room: degraded, local.
            heavy.currentLoad = TierLoad(predictedWaitSeconds: 4, stepSecondsP95: 0.3)
            light.currentLoad = TierLoad(predictedWaitSeconds: 1.5, stepSecondsP95: 0.15)
            let degraded = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: code)
            XCTAssertEqual(degraded.headers[tier], "light")
            XCTAssertEqual(degraded.headers[reason], "degraded")
            // The light tier past the TTFT target too: overflow, named as the tier and as the model.
            light.currentLoad = TierLoad(predictedWaitSeconds: 6, stepSecondsP95: 0.19)
            let overflow = try await client.send(.post, "/v1/chat/completions", key: f.keyA, json: code)
            XCTAssertEqual(overflow.status, .ok, overflow.text)
            XCTAssertEqual(overflow.object["model"] as? String, "up/remote")
            XCTAssertEqual(overflow.headers[tier], "up/remote")
            XCTAssertEqual(overflow.headers[reason], "overflow")
            // A light tier that refuses (full queue) counts as saturated as well, also for a light-class question.
            light.currentLoad = TierLoad(predictedWaitSeconds: nil, stepSecondsP95: 0.1)
            let question = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}"#)
            XCTAssertEqual(question.headers[tier], "up/remote")
            // A named local model is never sent away.
            let named = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"model": "small", "messages": [{"role": "user", "content": "Hi"}]}"#)
            XCTAssertEqual(named.object["model"] as? String, "small")
            XCTAssertNil(named.headers[tier])
        }
        XCTAssertEqual(remote.requests.count, 2, "the overflow model served the two overflowed requests")
        let after = Self.routing(SarvamMetrics.render(), tier: "up/remote", reason: "overflow")
        XCTAssertEqual(after - before, 2, "overflow decisions are counted")
    }

    /// `sarvam_routing_decisions_total` for one tier and reason (labels in either order; 0 when absent).
    static func routing(_ metrics: String, tier: String, reason: String) -> Double {
        let samples = [
            #"sarvam_routing_decisions_total{tier="\#(tier)",reason="\#(reason)"} "#,
            #"sarvam_routing_decisions_total{reason="\#(reason)",tier="\#(tier)"} "#,
        ]
        for line in metrics.split(separator: "\n") {
            for sample in samples where line.hasPrefix(sample) { return Double(line.dropFirst(sample.count)) ?? 0 }
        }
        return 0
    }

    func testAutoWithOneModelIsThatModel() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.send(
                .post, "/v1/chat/completions", key: f.keyA, json: #"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#)
            XCTAssertEqual(r.status, .ok, r.text)
            XCTAssertEqual(r.object["model"] as? String, "fake-model")
            let me = try await client.send(.get, "/api/me", key: f.keyA)
            XCTAssertEqual(me.object["models"] as? [String], ["fake-model"])
            XCTAssertNil(r.headers[HTTPField.Name("X-Sarvam-Tier")!])
        }
    }
}
