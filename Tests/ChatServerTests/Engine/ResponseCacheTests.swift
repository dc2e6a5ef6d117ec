// The response cache over the tiny model: a repeated deterministic request gets the stored reply,
// byte for byte, without a forward pass (the engine's step counter stays put); sampled requests,
// other users (unless shared) and stopped generations never hit; over HTTP the hit says so.
import Foundation
import Hummingbird
import HummingbirdTesting
import Tokenizer
import Transformer
import XCTest

@testable import ChatServer

private typealias ChatMessage = ChatServer::ChatMessage

final class ResponseCacheTests: XCTestCase {
    private func engine(_ mode: ResponseCacheMode, budget: Int = 1 << 20) throws -> TransformerChatEngine {
        SarvamMetrics.bootstrap()  // before the engine makes its metric handles
        return try makeTransformerEngine(
            id: "tiny-rc-\(UUID().uuidString.prefix(8))", model: EngineFixture.model(), tokenizer: EngineFixture.tokenizer,
            template: ChatTemplate(family: .chatML),
            settings: TransformerEngineSettings(
                contextLength: 256, threads: 2, kvCacheBytes: 1 << 20, scheduler: SchedulerSettings(interTokenLatencyTarget: nil),
                responseCache: ResponseCacheSettings(mode: mode, budgetBytes: budget)))
    }

    private func request(user: Int64 = 1, temperature: Double? = 0, seed: UInt64? = nil, maxTokens: Int = 10) -> GenerationRequest {
        GenerationRequest(
            messages: [ChatMessage(role: .user, content: "tell me about caches")], maxTokens: maxTokens,
            sampling: SamplingParameters(temperature: temperature, seed: seed), userId: user)
    }

    /// The events of a generation and whether it was a cache hit.
    private func run(_ engine: TransformerChatEngine, _ r: GenerationRequest) async throws -> (events: [GenerationEvent], hit: Bool) {
        let (stream, hit) = try engine.startGenerationReportingCache(r)
        var events: [GenerationEvent] = []
        for try await e in stream { events.append(e) }
        return (events, hit)
    }

    private func assertHit(
        _ expected: Bool, _ engine: TransformerChatEngine, _ r: GenerationRequest, file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let hit = try await run(engine, r).hit
        XCTAssertEqual(hit, expected, expected ? "expected a cache hit" : "expected a miss", file: file, line: line)
    }

    private func text(_ events: [GenerationEvent]) -> String {
        events.map { if case .text(let t, _) = $0 { t } else { "" } }.joined()
    }

    private func metric(_ name: String, model: String, label: String = "") -> Double {
        metricValue(name, model: model, label: label)
    }

    func testARepeatedGreedyRequestGetsTheStoredReplyWithoutAForwardPass() async throws {
        let engine = try engine(.user)
        defer { engine.close() }
        let model = engine.modelInfo.id
        let first = try await run(engine, request())
        XCTAssertFalse(first.hit)
        try await Task.sleep(for: .milliseconds(300))  // the last step's duration is recorded after its events
        let steps = metric("sarvam_engine_step_duration_seconds_count", model: model)
        XCTAssertGreaterThan(steps, 0, SarvamMetrics.render().split(separator: "\n").filter { $0.contains(model) }.joined(separator: "\n"))

        let second = try await run(engine, request())
        XCTAssertTrue(second.hit)
        XCTAssertEqual(Array(text(second.events).utf8), Array(text(first.events).utf8))
        XCTAssertEqual(second.events.dropLast(), first.events.dropLast(), "same promptProcessed and text events, same split")
        guard case .finished(let reason1, let usage1) = first.events.last, case .finished(let reason2, let usage2) = second.events.last
        else {
            return XCTFail("no finished event")
        }
        XCTAssertEqual(reason2, reason1)
        XCTAssertEqual(usage2.completionTokens, usage1.completionTokens)
        XCTAssertFalse(usage1.cachedResponse)
        XCTAssertTrue(usage2.cachedResponse)
        XCTAssertEqual(metric("sarvam_engine_step_duration_seconds_count", model: model), steps, "a hit ran a forward step")
        XCTAssertEqual(metric("sarvam_cache_hits_total", model: model, label: "cache=\"response\""), 1)
        XCTAssertEqual(metric("sarvam_cache_misses_total", model: model, label: "cache=\"response\""), 1)
        XCTAssertGreaterThan(metric("sarvam_cache_bytes", model: model, label: "cache=\"response\""), 0)

        // A seeded sampled request is deterministic too; an unseeded one never hits.
        let seeded = request(temperature: 0.9, seed: 42)
        _ = try await run(engine, seeded)
        let seededAgain = try await run(engine, seeded)
        XCTAssertTrue(seededAgain.hit)
        for _ in 0..<2 {
            let sampled = try await run(engine, request(temperature: 0.9))
            XCTAssertFalse(sampled.hit)
            guard case .finished(_, let usage) = sampled.events.last else { return XCTFail("no finished event") }
            XCTAssertFalse(usage.cachedResponse)
        }
        // Any other limit is another key.
        try await assertHit(false, engine, request(maxTokens: 9))
    }

    func testPerUserByDefaultSharedWhenGlobal() async throws {
        let perUser = try engine(.user)
        defer { perUser.close() }
        _ = try await run(perUser, request(user: 1))
        try await assertHit(false, perUser, request(user: 2))
        try await assertHit(true, perUser, request(user: 1))

        let global = try engine(.global)
        defer { global.close() }
        _ = try await run(global, request(user: 1))
        try await assertHit(true, global, request(user: 2))

        let off = try engine(.off)
        defer { off.close() }
        _ = try await run(off, request(user: 1))
        try await assertHit(false, off, request(user: 1))
    }

    func testAStoppedGenerationIsNeverStored() async throws {
        let engine = try engine(.user)
        defer { engine.close() }
        let (stream, hit) = try engine.startGenerationReportingCache(request(maxTokens: 200))
        XCTAssertFalse(hit)
        var stopped = false
        for try await event in stream {
            if case .text = event {  // the consumer goes away after the first text: a stop
                stopped = true
                break
            }
        }
        XCTAssertTrue(stopped, "the reply ended before its first text; the test needs a longer one")
        try await Task.sleep(for: .milliseconds(200))
        try await assertHit(false, engine, request(maxTokens: 200))
        try await assertHit(true, engine, request(maxTokens: 200))
    }

    func testTheBudgetDropsTheLeastRecentlyUsed() async throws {
        // Room for one stored reply (the size of one measured first), not two: the second evicts the first.
        let probe = try engine(.user)
        _ = try await run(probe, request(maxTokens: 10))
        let one = try XCTUnwrap(probe.responseCache).storedBytes
        probe.close()
        XCTAssertGreaterThan(one, 0)
        let engine = try engine(.user, budget: one * 3 / 2)
        defer { engine.close() }
        _ = try await run(engine, request(maxTokens: 10))
        _ = try await run(engine, request(maxTokens: 11))
        try await assertHit(true, engine, request(maxTokens: 11))
        try await assertHit(false, engine, request(maxTokens: 10))
        XCTAssertGreaterThanOrEqual(
            metric("sarvam_cache_evictions_total", model: engine.modelInfo.id, label: "cache=\"response\""), 1)
    }

    func testOverHTTPAHitSaysSoInAHeaderAndTheUsage() async throws {
        let engine = try engine(.user)
        defer { engine.close() }
        let fixture = try await ServerFixture(catalog: EngineCatalog(engines: [engine]))
        let body = #"{"messages":[{"role":"user","content":"hello cache"}],"temperature":0,"max_tokens":8}"#
        let streaming = #"{"messages":[{"role":"user","content":"hello cache"}],"temperature":0,"max_tokens":8,"stream":true}"#
        try await fixture.test { client in
            let first = try await client.send(.post, "/v1/chat/completions", key: fixture.keyA, json: body)
            XCTAssertEqual(first.status, .ok)
            XCTAssertNil(first.headers[.sarvamCache])
            let second = try await client.send(.post, "/v1/chat/completions", key: fixture.keyA, json: body)
            XCTAssertEqual(second.headers[.sarvamCache], "hit")
            let a = first.object
            let b = second.object
            func content(_ o: [String: Any]) -> String? {
                ((o["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
            }
            XCTAssertEqual(content(b), content(a))
            XCTAssertNil((a["usage"] as? [String: Any])?["cached_response"])
            XCTAssertEqual((b["usage"] as? [String: Any])?["cached_response"] as? Bool, true)

            // Streaming changes nothing the engine sees: the same stored reply, as SSE chunks.
            let sse = try await client.send(.post, "/v1/chat/completions", key: fixture.keyA, json: streaming)
            XCTAssertEqual(sse.headers[.sarvamCache], "hit")
            let deltas = parseSSE(sse.text).compactMap { frame -> String? in
                ((frame.json["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String
            }
            XCTAssertEqual(deltas.joined(), content(a))
            // Bob's identical request is his own.
            let bob = try await client.send(.post, "/v1/chat/completions", key: fixture.keyB, json: body)
            XCTAssertNil(bob.headers[.sarvamCache])
        }
    }
}
