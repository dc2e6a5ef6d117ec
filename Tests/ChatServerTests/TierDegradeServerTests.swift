import Foundation
import TestSupport
import XCTest

/// `"model": "auto"` under load with both real models in one `sarvam serve` process: a burst of
/// requests named to the heavy model fills its running slots and queue, and meanwhile `auto`
/// requests that would go heavy (code) are served by the light model, said so in the header, the
/// `model` field and the routing metric; once the burst has ended and the router's recovery window
/// (10 s) has passed, the same requests go heavy again. The reference is the routing policy's
/// definition: heavy for code when the heavy tier is calm, light with reason `degraded` while it
/// would make a new request wait past half the TTFT target.
final class TierDegradeServerTests: XCTestCase {
    static let lightModel = defaultModelPath()
    static let heavyModel = defaultModelPath().deletingLastPathComponent().appendingPathComponent("qwen2.5-coder-1.5b-instruct.sarvam")
    /// A code question (~150 tokens) longer than the burst's prompts (~40): it comes after them in
    /// line (shortest first), so it can never take the slot of one still in its prompt.
    static let code =
        "Why is this slow for long lists, and how would you fix it?\n```python\n"
        + (0..<8).map { "def reverse_\($0)(items):\n    out = []\n    for x in items:\n        out.insert(0, x)\n    return out\n" }
        .joined() + "```"

    func testHeavyBurstDegradesAutoToLightAndItRecoversAfterwards() async throws {
        guard FileManager.default.fileExists(atPath: Self.lightModel.path) else {
            return XCTFail("\(Self.lightModel.path) is missing: run tools/fetch-model default (tools/test does)")
        }
        guard FileManager.default.fileExists(atPath: Self.heavyModel.path) else {
            throw XCTSkip(
                "\(Self.heavyModel.path) is missing: run tools/fetch-model large (tools/test does unless SARVAM_SKIP_LARGE_MODEL=1)")
        }
        let heavyId = Self.heavyModel.deletingPathExtension().lastPathComponent
        let lightId = Self.lightModel.deletingPathExtension().lastPathComponent
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-degrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let key = "sk-sarvam-degrade-\(UUID().uuidString.prefix(12))"
        // Two running sequences per model: the load a burst makes is then the same on any box, fast
        // or busy (the measured capacity would depend on the box and on what else runs on it).
        let server = try ServerProcess(
            arguments: [
                "--model", Self.lightModel.path, "--model", Self.heavyModel.path, "--data-dir", folder.path, "--context", "1024",
                "--threads", "1", "--max-sequences", "2", "--kv-snapshots", "off", "--response-cache", "off",
            ],
            environment: ["SARVAM_ADMIN_KEY": key], logPath: folder.appendingPathComponent("server.log").path)
        defer { server.stop() }
        try await server.waitUntilReady()
        let client = Client(port: server.port, key: key)
        // `serve` reads each model's weights into huge pages by default (`--weights`).
        XCTAssertEqual(server.log.components(separatedBy: "weights in huge pages").count - 1, 2, server.log)

        // Calm: code goes heavy.
        let calm = try await client.auto(Self.code)
        XCTAssertEqual(calm.tier, "heavy", calm.raw)
        XCTAssertEqual(calm.reason, "code", calm.raw)
        XCTAssertEqual(calm.model, heavyId, calm.raw)

        // The burst: six requests named to the heavy model (never rerouted), 32 tokens each, two
        // at a time: four wait in its queue while the first two stream.
        let generatedBefore = try await client.counter("sarvam_generated_tokens_total", model: heavyId)
        let burstStarted = ContinuousClock.now
        let burst = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<6 {
                    group.addTask { try await client.named(heavyId, "Write a C function that sums an array (\(i)).", tokens: 32) }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
        }
        try await client.waitForQueue(model: heavyId, waiting: 2, generatedBefore: generatedBefore, running: 2)

        // Meanwhile the same code request goes light, degraded; three times, while the heavy model is still full.
        var degraded = 0
        for _ in 0..<3 {
            let reply = try await client.auto(Self.code)
            XCTAssertEqual(reply.status, 200, reply.raw)
            XCTAssertEqual(reply.tier, "light", reply.raw)
            XCTAssertEqual(reply.reason, "degraded", reply.raw)
            XCTAssertEqual(reply.model, lightId, reply.raw)
            if reply.tier == "light" && reply.reason == "degraded" { degraded += 1 }
        }
        let stillRunning = try await client.gauge("sarvam_requests_running", model: heavyId)
        let stillQueued = try await client.gauge("sarvam_requests_waiting", model: heavyId)
        XCTAssertTrue(stillRunning >= 2 || stillQueued > 0, "the heavy model had room again before the last degraded request")
        let metrics = try await client.metrics()
        XCTAssertGreaterThanOrEqual(
            AutoModelTests.routing(metrics, tier: "light", reason: "degraded"), Double(degraded), "degraded decisions are counted")

        let statuses = try await burst.value
        XCTAssertEqual(statuses, Array(repeating: 200, count: 6), "every request of the burst is served")
        let burstEnded = ContinuousClock.now

        // Right after the burst the router still waits out its recovery window.
        let after = try await client.auto(Self.code)
        XCTAssertEqual(after.tier, "light", after.raw)
        XCTAssertEqual(after.reason, "degraded", after.raw)
        // Then code goes heavy again: within the window plus a margin, not before the window.
        var recovered: Reply?
        let deadline = burstEnded + .seconds(40)
        while ContinuousClock.now < deadline {
            try await Task.sleep(for: .seconds(2))
            let reply = try await client.auto(Self.code)
            if reply.tier == "heavy" {
                recovered = reply
                break
            }
            XCTAssertEqual(reply.reason, "degraded", reply.raw)
        }
        let back = try XCTUnwrap(recovered, "auto did not go heavy again within 40 s of the burst's end")
        let recoveredAfter = ContinuousClock.now - burstEnded
        XCTAssertEqual(back.reason, "code", back.raw)
        XCTAssertEqual(back.model, heavyId, back.raw)
        XCTAssertGreaterThanOrEqual(recoveredAfter, .seconds(10), "heavy again before the 10 s recovery window passed")
        let final = try await client.metrics()
        XCTAssertGreaterThanOrEqual(AutoModelTests.routing(final, tier: "heavy", reason: "code"), 2)
        XCTAssertGreaterThanOrEqual(AutoModelTests.routing(final, tier: "light", reason: "degraded"), Double(degraded + 1))
        print(
            "TierDegradeServerTests: burst took \(burstEnded - burstStarted); \(degraded) degraded replies during it; "
                + "heavy again \(recoveredAfter) after it")
    }

    /// A bad `--tier-degrade` or `--upstream-overflow` (flag or variable) stops the server at start
    /// with an error naming the setting, before any model is loaded.
    func testBadRoutingSettingsStopTheServerNamingThem() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-routing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let base = ["--model", folder.appendingPathComponent("none.sarvam").path, "--data-dir", folder.path]
        let cases: [(arguments: [String], environment: [String: String], expected: [String])] = [
            (["--tier-degrade", "maybe"], [:], ["--tier-degrade / SARVAM_TIER_DEGRADE", "maybe"]),
            ([], ["SARVAM_TIER_DEGRADE": "sometimes"], ["--tier-degrade / SARVAM_TIER_DEGRADE", "sometimes"]),
            (["--upstream-overflow", "nowhere/model"], [:], ["--upstream-overflow / SARVAM_UPSTREAM_OVERFLOW", "no upstream is configured"]),
            (
                ["--upstream", "a=http://127.0.0.1:9", "--upstream-overflow", "b/model"], [:],
                ["--upstream-overflow / SARVAM_UPSTREAM_OVERFLOW", "\"b/model\"", "upstreams: a"]
            ),
            (["--upstream", "a=http://127.0.0.1:9"], ["SARVAM_UPSTREAM_OVERFLOW": "a"], ["--upstream-overflow / SARVAM_UPSTREAM_OVERFLOW"]),
        ]
        for (i, c) in cases.enumerated() {
            do {
                let server = try ServerProcess(
                    arguments: base + c.arguments, environment: c.environment, logPath: folder.appendingPathComponent("\(i).log").path)
                server.stop()
                XCTFail("case \(i): the server started with \(c.arguments) \(c.environment)")
            } catch {
                for text in c.expected { XCTAssertTrue("\(error)".contains(text), "case \(i): \(text) not in \(error)") }
            }
        }
    }

    /// One routed reply: status, the `X-Sarvam-Tier` headers, the stream's `model`, and the raw response.
    struct Reply {
        var status: Int
        var tier: String?
        var reason: String?
        var model: String?
        var raw: String
    }

    /// Streamed requests (a ping at once and through the prefill, so the client's 10 s read
    /// timeout never fires while a request waits in a queue) over plain sockets.
    struct Client: Sendable {
        let port: Int
        let key: String

        func auto(_ content: String) async throws -> Reply {
            try await stream(model: "auto", content, tokens: 4)
        }

        /// The status of a streamed request naming `model`.
        func named(_ model: String, _ content: String, tokens: Int) async throws -> Int {
            try await stream(model: model, content, tokens: tokens).status
        }

        func stream(model: String, _ content: String, tokens: Int) async throws -> Reply {
            let body: [String: Any] = [
                "model": model, "stream": true, "max_tokens": tokens, "ignore_eos": true, "temperature": 0,
                "messages": [["role": "user", "content": content]],
            ]
            let json = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
            let raw = try await LiveServerTests.readThenHangUp(
                port: port, request: HTTP.raw("POST", "/v1/chat/completions", key: key, json: json)
            ) { _ in false }
            let head = raw.components(separatedBy: "\r\n\r\n").first ?? ""
            func header(_ name: String) -> String? {
                for line in head.components(separatedBy: "\r\n") {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == name.lowercased() {
                        return parts[1].trimmingCharacters(in: .whitespaces)
                    }
                }
                return nil
            }
            // "\r\n" is one Character: split after turning it into "\n".
            let lines = raw.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n")
            let model = lines.lazy.compactMap { line -> String? in
                guard line.hasPrefix("data: {") else { return nil }
                return UpstreamServerTests.object(String(line.dropFirst(6)))?["model"] as? String
            }.first
            return Reply(
                status: HTTP.parse(raw).0, tier: header("X-Sarvam-Tier"), reason: header("X-Sarvam-Tier-Reason"), model: model, raw: raw)
        }

        func metrics() async throws -> String {
            let (status, body) = try await HTTP.request(port: port, "GET", "/metrics", key: key)
            guard status == 200 else { throw StringError("/metrics answered \(status): \(body)") }
            return body
        }

        func counter(_ name: String, model: String) async throws -> Double { try await gauge(name, model: model) }

        func gauge(_ name: String, model: String) async throws -> Double {
            UpstreamServerTests.metric(try await metrics(), #"\#(name){model="\#(model)"}"#)
        }

        /// Waits until `model` has `waiting` requests queued and has generated a token for each of
        /// its `running` ones since `generatedBefore` (they are past their prompts, so a new
        /// request cannot displace them).
        func waitForQueue(model: String, waiting: Double, generatedBefore: Double, running: Double) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            var last = ""
            while ContinuousClock.now < deadline {
                let text = try await metrics()
                let queued = UpstreamServerTests.metric(text, #"sarvam_requests_waiting{model="\#(model)"}"#)
                let generated = UpstreamServerTests.metric(text, #"sarvam_generated_tokens_total{model="\#(model)"}"#)
                if queued >= waiting && generated >= generatedBefore + running { return }
                last = "waiting \(queued), generated \(generated)"
                try await Task.sleep(for: .milliseconds(100))
            }
            throw StringError("\(model)'s queue did not fill within 60 s (\(last))")
        }

        /// Polls `/v1/models` until `id` is listed (an upstream's list is read in the background).
        func waitForModel(_ id: String) async throws {
            let deadline = ContinuousClock.now + .seconds(20)
            var last = ""
            while ContinuousClock.now < deadline {
                let (_, body) = try await HTTP.request(port: port, "GET", "/v1/models", key: key)
                last = body
                let listed = UpstreamServerTests.object(body)?["data"] as? [[String: Any]] ?? []
                if listed.contains(where: { $0["id"] as? String == id }) { return }
                try await Task.sleep(for: .milliseconds(250))
            }
            throw StringError("\(id) was not listed within 20 s: \(last)")
        }
    }
}
