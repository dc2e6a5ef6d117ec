import Foundation
import TestSupport
import XCTest

/// `--upstream-overflow` end to end with real processes: a front `sarvam serve` with one local
/// model (one running sequence) and a second `sarvam serve` as its upstream. While a burst of
/// requests named to the local model fills its queue, an `auto` request goes to the upstream model,
/// said so in `X-Sarvam-Tier` (the upstream's `NAME/MODEL`), the reason `overflow`, the `model`
/// field and the routing metric, and its text is the upstream's own answer to the same request;
/// once the burst is over, `auto` is the local model again.
final class OverflowServerTests: XCTestCase {
    func testAutoOverflowsToTheUpstreamWhileTheLocalModelIsSaturated() async throws {
        let model = defaultModelPath()
        guard FileManager.default.fileExists(atPath: model.path) else {
            return XCTFail("\(model.path) is missing: run tools/fetch-model default (tools/test does)")
        }
        let stem = model.deletingPathExtension().lastPathComponent
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-overflow-\(UUID().uuidString)")
        for sub in ["upstream", "front"] {
            try FileManager.default.createDirectory(at: folder.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        func arguments(_ data: String) -> [String] {
            [
                "--model", model.path, "--data-dir", folder.appendingPathComponent(data).path, "--context", "1024", "--threads", "1",
                "--kv-snapshots", "off", "--response-cache", "off",
            ]
        }
        let upstreamKey = "sk-sarvam-upstream-\(UUID().uuidString.prefix(12))"
        let frontKey = "sk-sarvam-front-\(UUID().uuidString.prefix(12))"
        let upstream = try ServerProcess(
            arguments: arguments("upstream"), environment: ["SARVAM_ADMIN_KEY": upstreamKey],
            logPath: folder.appendingPathComponent("upstream.log").path)
        defer { upstream.stop() }
        try await upstream.waitUntilReady()
        let remote = "local2/\(stem)"
        // One running sequence: three requests fill the local model's queue on any box.
        let front = try ServerProcess(
            arguments: arguments("front") + [
                "--max-sequences", "1", "--upstream", "local2=http://127.0.0.1:\(upstream.port)", "--upstream-refresh", "2",
                "--upstream-overflow", remote,
            ],
            environment: ["SARVAM_ADMIN_KEY": frontKey, "SARVAM_UPSTREAM_LOCAL2_KEY": upstreamKey],
            logPath: folder.appendingPathComponent("front.log").path)
        defer { front.stop() }
        try await front.waitUntilReady()
        let client = TierDegradeServerTests.Client(port: front.port, key: frontKey)
        try await client.waitForModel(remote)
        let question = "Write a Python function that returns the square of a number."

        // Calm: auto is the local model (one model: no tier header).
        let calm = try await client.auto(question)
        XCTAssertEqual(calm.model, stem, calm.raw)
        XCTAssertNil(calm.tier, calm.raw)

        let generatedBefore = try await client.counter("sarvam_generated_tokens_total", model: stem)
        let burst = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<3 {
                    group.addTask { try await client.named(stem, "Write a C function that sums an array (\(i)).", tokens: 48) }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
        }
        try await client.waitForQueue(model: stem, waiting: 2, generatedBefore: generatedBefore, running: 1)

        let overflow = try await client.auto(question)
        XCTAssertEqual(overflow.status, 200, overflow.raw)
        XCTAssertEqual(overflow.tier, remote, overflow.raw)
        XCTAssertEqual(overflow.reason, "overflow", overflow.raw)
        XCTAssertEqual(overflow.model, remote, overflow.raw)
        let stillQueued = try await client.gauge("sarvam_requests_waiting", model: stem)
        XCTAssertGreaterThan(stillQueued, 0, "the local queue emptied before the overflowed request: it proved nothing")
        // The upstream's own answer to the same request (temperature 0, the same 4 tokens).
        let direct = try await TierDegradeServerTests.Client(port: upstream.port, key: upstreamKey).stream(model: stem, question, tokens: 4)
        XCTAssertEqual(direct.status, 200, direct.raw)
        XCTAssertEqual(UpstreamServerTests.streamedPieces(overflow.raw).joined(), UpstreamServerTests.streamedPieces(direct.raw).joined())
        XCTAssertFalse(UpstreamServerTests.streamedPieces(direct.raw).isEmpty, direct.raw)
        let metrics = try await client.metrics()
        XCTAssertEqual(AutoModelTests.routing(metrics, tier: remote, reason: "overflow"), 1, metrics)

        let statuses = try await burst.value
        XCTAssertEqual(statuses, [200, 200, 200])
        let after = try await client.auto(question)
        XCTAssertEqual(after.model, stem, after.raw)
        XCTAssertNil(after.tier, after.raw)
    }
}
