import Foundation
import Transformer
import XCTest
@testable import ChatServer

/// A chat's next turn resends its history: the engine starts it after the cached blocks of the
/// previous turn and still produces the tokens of a run from scratch.
final class PrefixCachingSchedulerTests: XCTestCase {
    /// Streams are kept: dropping one is a disconnect, which cancels its request.
    private var streams: [AsyncThrowingStream<GenerationEvent, Error>] = []

    /// Turn 1, then turn 2 = turn 1's prompt + reply + a follow-up; returns turn 2's step reports.
    private func twoTurns(_ h: SchedulerHarness) throws -> (prompt: [Int], reports: [StepReport]) {
        let first = EngineFixture.prompt(30, seed: 51)
        streams.append(try h.scheduler.trySubmit(h.job("t1", prompt: first, maxTokens: 6)))
        h.runToCompletion()
        let second = first + h.log["t1"] + EngineFixture.prompt(5, seed: 52)
        streams.append(try h.scheduler.trySubmit(h.job("t2", prompt: second, maxTokens: 6)))
        return (second, h.runToCompletion())
    }

    func testFollowUpTurnStartsAfterTheCachedHistory() async throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 2, prefillTokensPerStep: 64))
        let (prompt, reports) = try twoTurns(h)
        XCTAssertEqual(prompt.count, 41)
        // Turn 1 fed 30 prompt + 5 reply tokens (the 6th was never fed): 8 full blocks of 4.
        XCTAssertEqual(reports.flatMap(\.reusedPrefix), [.init(requestId: "t2", tokens: 32)])
        XCTAssertEqual(
            reports.flatMap(\.prefilled).filter { $0.requestId == "t2" }.reduce(0) { $0 + $1.tokens }, 9,
            "only the 9 tokens after the cached 32 are prefilled")
        XCTAssertEqual(h.log["t2"], try EngineFixture.alone(h.model, prompt: prompt, maxTokens: 6))
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
        XCTAssertGreaterThan(h.cache.cachedBlockCount, 0)
        let first = await collect(streams[0]), second = await collect(streams[1])
        XCTAssertEqual(first.events.last, .finished(.length, GenerationUsage(promptTokens: 30, completionTokens: 6)))
        XCTAssertEqual(
            second.events.last, .finished(.length, GenerationUsage(promptTokens: 41, completionTokens: 6, cachedPromptTokens: 32)),
            "usage reports the prompt tokens served from the cache")
    }

    func testCachedPrefixesAreCappedWhileBusy() throws {
        let model = try EngineFixture.model()
        let blockBytes = KVCache.bytesPerPosition(model.configuration, precision: .float16) * 4
        let h = try SchedulerHarness(
            settings: SchedulerSettings(
                maxRunningSequences: 2, prefillTokensPerStep: 64,
                maxCachedPrefixBytes: 2 * blockBytes), model: model)
        let (prompt, reports) = try twoTurns(h)
        // Turn 1 left 8 full blocks; the cap keeps the 2 released last: a release returns a
        // sequence's deepest block first, so the first two blocks of the history survive.
        XCTAssertEqual(reports.flatMap(\.reusedPrefix), [.init(requestId: "t2", tokens: 8)])
        XCTAssertEqual(h.log["t2"], try EngineFixture.alone(h.model, prompt: prompt, maxTokens: 6))
        XCTAssertEqual(h.cache.cachedBlockCount, 2)
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
    }

    func testWithoutPrefixCachingTheWholePromptIsPrefilled() throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 2, prefillTokensPerStep: 64, prefixCaching: false))
        let (prompt, reports) = try twoTurns(h)
        XCTAssertEqual(reports.flatMap(\.reusedPrefix), [])
        XCTAssertEqual(reports.flatMap(\.prefilled).filter { $0.requestId == "t2" }.reduce(0) { $0 + $1.tokens }, prompt.count)
        XCTAssertEqual(h.log["t2"], try EngineFixture.alone(h.model, prompt: prompt, maxTokens: 6))
        XCTAssertEqual(h.cache.cachedBlockCount, 0)
    }

    func testRequestsRunningSideBySideShareTheirCommonSystemPrompt() throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 64))
        let system = EngineFixture.prompt(24, seed: 53)
        let a = system + EngineFixture.prompt(3, seed: 54), b = system + EngineFixture.prompt(4, seed: 55)
        streams.append(try h.scheduler.trySubmit(h.job("a", prompt: a, maxTokens: 12)))
        h.scheduler.step()  // a's prompt is prefilled and its blocks registered
        streams.append(try h.scheduler.trySubmit(h.job("b", prompt: b, maxTokens: 12)))
        let report = h.scheduler.step()
        XCTAssertEqual(report.reusedPrefix, [.init(requestId: "b", tokens: 24)], "b shares a's blocks while a still runs")
        h.runToCompletion()
        XCTAssertEqual(h.log["a"], try EngineFixture.alone(h.model, prompt: a, maxTokens: 12))
        XCTAssertEqual(h.log["b"], try EngineFixture.alone(h.model, prompt: b, maxTokens: 12))
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
    }
}
