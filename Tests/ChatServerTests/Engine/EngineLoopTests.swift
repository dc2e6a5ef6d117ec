import Foundation
import Tokenizer
import Transformer
import XCTest
@testable import ChatServer

/// Requests joining and leaving between steps produce exactly the tokens they produce alone.
final class SchedulerBatchingTests: XCTestCase {
    func testJoiningAndLeavingGivesSameTokensAsAlone() async throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 8, prefillTokensPerStep: 16))
        let specs: [(id: String, prompt: [Int], maxTokens: Int, joinAt: Int)] = [
            ("a", EngineFixture.prompt(5, seed: 1), 6, 0),
            ("b", EngineFixture.prompt(40, seed: 2), 10, 0),
            ("c", EngineFixture.prompt(12, seed: 3), 3, 2),
            ("d", EngineFixture.prompt(70, seed: 4), 8, 5),
            ("e", EngineFixture.prompt(1, seed: 5), 4, 9),
        ]
        var streams: [String: AsyncThrowingStream<GenerationEvent, Error>] = [:]
        for step in 0..<300 {
            for s in specs where s.joinAt == step {
                streams[s.id] = try h.scheduler.trySubmit(h.job(s.id, prompt: s.prompt, maxTokens: s.maxTokens))
            }
            h.scheduler.step()
            if step > 10 && h.scheduler.activeRequestCount == 0 { break }
        }
        XCTAssertEqual(h.scheduler.activeRequestCount, 0, "every request should have finished")
        for s in specs {
            let expected = try EngineFixture.alone(h.model, prompt: s.prompt, maxTokens: s.maxTokens)
            XCTAssertEqual(h.log[s.id], expected, "request \(s.id): batched tokens differ from the tokens generated alone")
            let (events, error) = await collect(streams[s.id]!)
            XCTAssertNil(error)
            XCTAssertEqual(events.first, .promptProcessed(promptTokens: s.prompt.count), "request \(s.id)")
            XCTAssertEqual(events.last, .finished(.length, GenerationUsage(promptTokens: s.prompt.count, completionTokens: s.maxTokens)))
            var text = ""
            var counted = 0
            for case let .text(t, n) in events { text += t; counted += n }
            XCTAssertEqual(text, EngineFixture.tokenizer.decode(expected, skipSpecial: true), "request \(s.id) text")
            XCTAssertEqual(counted, s.maxTokens, "request \(s.id): token counts of the text events")
        }
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount, "every block should be back in the pool")
    }

    func testTheStepTraceRecordsWhatEachStepRan() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("trace-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let trace = try StepTrace(path: path)
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 16), stepTrace: trace)
        let prompts = ["a": EngineFixture.prompt(5, seed: 21), "b": EngineFixture.prompt(40, seed: 22)]
        let streams = try prompts.sorted { $0.key < $1.key }.map {
            try h.scheduler.trySubmit(h.job($0.key, prompt: $0.value, maxTokens: 3))
        }
        let reports = h.runToCompletion().filter { !$0.decoded.isEmpty || !$0.prefilled.isEmpty }
        trace.flush()
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try JSONDecoder().decode(StepTraceRecord.self, from: Data($0.utf8)) }
        XCTAssertEqual(records.count, reports.count, "one line per step that ran the model")
        var fed: [String: Int] = [:]
        for (record, report) in zip(records, reports) {
            XCTAssertEqual(record.decodeRows, report.decoded.count)
            XCTAssertEqual(record.promptTokens, report.prefilled.reduce(0) { $0 + $1.tokens })
            XCTAssertEqual(record.promptRequests, report.prefilled.count)
            var endsOfPrompt = 0
            for p in report.prefilled {
                fed[p.requestId, default: 0] += p.tokens
                if fed[p.requestId] == prompts[p.requestId]!.count { endsOfPrompt += 1 }
            }
            XCTAssertEqual(record.logitRows, report.decoded.count + endsOfPrompt, "decode rows and the chunks that end a prompt")
            XCTAssertGreaterThan(record.predicted, 0)
        }
        XCTAssertEqual(records.reduce(0) { $0 + $1.promptTokens }, 45)
        XCTAssertEqual(records.reduce(0) { $0 + $1.decodeRows }, 4, "3 tokens each: the first from the prompt's logits, 2 decode rows")
        XCTAssertEqual(streams.count, 2)
    }

    func testLongPromptIsChunkedWhileShortRepliesGetATokenEveryStep() throws {
        let budget = 32
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: budget))
        // Streams are kept: dropping one is a disconnect, which cancels its request.
        var streams = [try h.scheduler.trySubmit(h.job("short1", prompt: EngineFixture.prompt(6, seed: 11), maxTokens: 30))]
        streams.append(try h.scheduler.trySubmit(h.job("short2", prompt: EngineFixture.prompt(9, seed: 12), maxTokens: 30)))
        h.scheduler.step()  // both prompts fit in one step's budget
        h.scheduler.step()
        XCTAssertEqual(h.scheduler.lastStep.decoded, ["short1", "short2"])

        let long = EngineFixture.prompt(200, seed: 13)
        streams.append(try h.scheduler.trySubmit(h.job("long", prompt: long, maxTokens: 5)))
        var prefillSteps = 0
        var prefilled = 0
        while prefilled < long.count && prefillSteps < 20 {
            let report = h.scheduler.step()
            XCTAssertEqual(report.decoded, ["short1", "short2"], "both short replies get a token in every step of the long prefill")
            let chunk = report.prefilled.first { $0.requestId == "long" }?.tokens ?? 0
            XCTAssertLessThanOrEqual(chunk, budget)
            XCTAssertGreaterThan(chunk, 0)
            prefilled += chunk
            prefillSteps += 1
        }
        XCTAssertEqual(prefillSteps, (long.count + budget - 1) / budget, "the long prompt takes ceil(200/32) steps")
        h.runToCompletion()
        XCTAssertEqual(h.log["long"], try EngineFixture.alone(h.model, prompt: long, maxTokens: 5))
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
        XCTAssertEqual(streams.count, 3)
    }

    func testStopTokenAndContextLimitEndReplies() async throws {
        let model = try EngineFixture.model()
        let prompt = EngineFixture.prompt(8, seed: 21)
        let free = try EngineFixture.alone(model, prompt: prompt, maxTokens: 6)
        // Stop on the third greedy token: the tokens before its first occurrence come out, reason stop.
        let before = free.firstIndex(of: free[2])!
        let h = try SchedulerHarness(settings: SchedulerSettings(), contextLength: 32, model: model)
        let stopped = try h.scheduler.trySubmit(h.job("stop", prompt: prompt, maxTokens: 6, stop: [free[2]]))
        // 28 prompt tokens in a context of 32: tokens at positions 28...31 are fed, 5 come out.
        let longPrompt = EngineFixture.prompt(28, seed: 22)
        let limited = try h.scheduler.trySubmit(h.job("limit", prompt: longPrompt, maxTokens: 100))
        h.runToCompletion()

        let s = await collect(stopped)
        XCTAssertEqual(h.log["stop"], Array(free.prefix(before)))
        XCTAssertEqual(s.events.last, .finished(.stop, GenerationUsage(promptTokens: 8, completionTokens: before)))
        let l = await collect(limited)
        XCTAssertEqual(h.log["limit"].count, 5)
        XCTAssertEqual(h.log["limit"], try EngineFixture.alone(model, prompt: longPrompt, maxTokens: 100, contextLength: 32))
        XCTAssertEqual(l.events.last, .finished(.length, GenerationUsage(promptTokens: 28, completionTokens: 5)))
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("too long", prompt: EngineFixture.prompt(32, seed: 1), maxTokens: 1))) {
            XCTAssertEqual($0 as? ChatEngineError, .contextLengthExceeded(promptTokens: 32, limit: 32))
        }
    }

    func testPreemptionRecomputesAndGivesTheSameTokens() throws {
        // 12 blocks of 4 positions; three replies of 10 + 20 positions need 8 blocks each.
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 3, admissionHeadroomTokens: 2), blocks: 12)
        let prompts = (0..<3).map { EngineFixture.prompt(10, seed: UInt64(30 + $0)) }
        let streams = try prompts.enumerated().map { i, p in try h.scheduler.trySubmit(h.job("r\(i)", prompt: p, maxTokens: 20)) }
        let reports = h.runToCompletion()
        XCTAssertEqual(streams.count, 3)
        XCTAssertGreaterThan(reports.reduce(0) { $0 + $1.preempted.count }, 0, "the pool is too small for all three: someone is preempted")
        // Its blocks went to the cached prefixes: when room returns it resumes after those that survived.
        let resumed = reports.flatMap(\.reusedPrefix).map(\.requestId)
        XCTAssertFalse(resumed.isEmpty, "a preempted request should reuse its own cached blocks")
        XCTAssertTrue(Set(resumed).isSubset(of: reports.flatMap(\.preempted)), "only preempted requests have cached prefixes here")
        for (i, p) in prompts.enumerated() {
            XCTAssertEqual(h.log["r\(i)"], try EngineFixture.alone(h.model, prompt: p, maxTokens: 20), "request r\(i)")
        }
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
    }
}

/// Admission limits, fairness between users, and the queue bound.
final class SchedulerFairnessTests: XCTestCase {
    func testPerUserCapKeepsTheThirdRequestWaiting() throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, maxRunningPerUser: 2, prefillTokensPerStep: 4))
        var streams = try ["a1", "a2", "a3"].map {
            try h.scheduler.trySubmit(h.job($0, prompt: EngineFixture.prompt(50, seed: 1), maxTokens: 2, user: 1))
        }
        streams.append(try h.scheduler.trySubmit(h.job("b1", prompt: EngineFixture.prompt(50, seed: 2), maxTokens: 2, user: 2)))
        let first = h.scheduler.step()
        XCTAssertEqual(first.admitted, ["a1", "a2", "b1"], "user 1 is capped at 2 running; b1 overtakes a3")
        XCTAssertEqual(h.scheduler.waitingRequestIds, ["a3"])
        h.runToCompletion()
        XCTAssertEqual(h.log["a3"].count, 2, "a3 runs once a slot of its user frees")
        XCTAssertEqual(streams.count, 4)
    }

    func testWithoutACapAUserGetsAnEqualShareWhileOthersWait() throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, queueLimit: 8))
        // User 1 alone: every slot (nobody else waits).
        var streams = try (0..<4).map {
            try h.scheduler.trySubmit(h.job("a\($0)", prompt: EngineFixture.prompt(8, seed: 1), maxTokens: 30, user: 1))
        }
        XCTAssertEqual(h.scheduler.step().admitted, ["a0", "a1", "a2", "a3"])
        // Users 1 and 2 both wait: a freed slot goes to user 2, whose share (4 / 2 users) is not used.
        streams += try (4..<6).map {
            try h.scheduler.trySubmit(h.job("a\($0)", prompt: EngineFixture.prompt(8, seed: 1), maxTokens: 30, user: 1))
        }
        streams.append(try h.scheduler.trySubmit(h.job("b0", prompt: EngineFixture.prompt(40, seed: 2), maxTokens: 30, user: 2)))
        _ = streams.removeFirst()  // a0's client goes away (a dropped stream cancels its request)
        let report = h.scheduler.step()
        XCTAssertEqual(report.admitted, ["b0"], "b0 is longer than a4 and a5, but user 1 holds more than its share")
        withExtendedLifetime(streams) {}
    }

    func testALastingOverloadRefusesWithThePredictedWait() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(
                maxRunningSequences: 1, queueLimit: 64, maxAcceptedPerUser: 64,
                timeToFirstTokenTarget: 2, overloadSeconds: 30))
        // Three quick requests end 10 s apart: a running slot frees every 10 s.
        var streams = try (0..<3).map { try h.scheduler.trySubmit(h.job("q\($0)", prompt: [1, 2, 3, 4], maxTokens: 1, user: Int64($0))) }
        for _ in 0..<3 {
            h.scheduler.step()
            h.clock.advance(10)
        }
        // One long reply runs, four wait: the last one's predicted wait, 4 x 10 s, is over the target.
        streams += try (0..<5).map {
            try h.scheduler.trySubmit(h.job("u\($0)", prompt: [1, 2, 3, 4], maxTokens: 400, user: Int64(10 + $0)))
        }
        h.scheduler.step()
        XCTAssertEqual(h.scheduler.waitingRequestIds.count, 4)
        streams.append(try h.scheduler.trySubmit(h.job("early", prompt: [5, 6], maxTokens: 1, user: 99)))
        // Still overloaded 30 s later: a newcomer behind the 5 waiting gets a slot after 6 more
        // ends (the running reply's, then theirs), 60 s: refused, told so.
        h.clock.advance(31)
        h.scheduler.step()
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("late", prompt: [5, 6], maxTokens: 1, user: 100))) {
            XCTAssertEqual($0 as? ChatEngineError, .busy(retryAfterSeconds: 60))
        }
        withExtendedLifetime(streams) {}
    }

    func testOneUsersBurstLeavesRoomForOthersInTheQueue() throws {
        // 2 running + 2 queued in all: one user may hold half of them.
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 2, queueLimit: 2))
        let mine = try (0..<2).map { try h.scheduler.trySubmit(h.job("a\($0)", prompt: [1, 2], maxTokens: 1, user: 1)) }
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("a2", prompt: [1, 2], maxTokens: 1, user: 1))) {
            guard case .busy = $0 as? ChatEngineError else { return XCTFail("\($0)") }
        }
        let theirs = try (0..<2).map { try h.scheduler.trySubmit(h.job("b\($0)", prompt: [1, 2], maxTokens: 1, user: 2)) }
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("c0", prompt: [1, 2], maxTokens: 1, user: 3)), "the whole box is full now")
        withExtendedLifetime((mine, theirs)) {}
    }

    func testShortPromptOvertakesLongPrefillsOfOtherUsers() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 32, interTokenLatencyTarget: nil))
        var streams = try (0..<3).map {
            try h.scheduler.trySubmit(
                h.job("long\($0)", prompt: EngineFixture.prompt(300, seed: UInt64($0)), maxTokens: 2, user: Int64($0)))
        }
        h.scheduler.step()
        h.clock.advance(0.01)
        streams.append(try h.scheduler.trySubmit(h.job("short", prompt: EngineFixture.prompt(6, seed: 9), maxTokens: 3, user: 7)))
        let report = h.scheduler.step()
        XCTAssertEqual(report.admitted, ["short"])
        XCTAssertEqual(report.prefilled.first { $0.requestId == "short" }?.tokens, 6, "the short prompt is prefilled whole at once")
        XCTAssertEqual(report.prefilled.reduce(0) { $0 + $1.tokens }, 32)
        XCTAssertEqual(h.scheduler.step().decoded, ["short"], "and streams from the next step on")
        withExtendedLifetime(streams) {}
    }

    func testALongPromptIsNotStarvedByAStreamOfShortOnes() throws {
        // Aging at 10 tokens/s: a 300-token prompt goes ahead of prompts submitted 30 s after it.
        let h = try SchedulerHarness(
            settings: SchedulerSettings(
                maxRunningSequences: 1, maxRunningPerUser: 1, queueLimit: 64,
                maxAcceptedPerUser: 64, prefillTokensPerStep: 512, interTokenLatencyTarget: nil))
        var streams = [try h.scheduler.trySubmit(h.job("first", prompt: EngineFixture.prompt(4, seed: 1), maxTokens: 1, user: 1))]
        streams.append(try h.scheduler.trySubmit(h.job("long", prompt: EngineFixture.prompt(300, seed: 2), maxTokens: 1, user: 2)))
        var admittedAt: Double?
        for i in 0..<100 where admittedAt == nil {
            // A new short question every 0.5 s, each from another user.
            streams.append(
                try h.scheduler.trySubmit(h.job("s\(i)", prompt: EngineFixture.prompt(6, seed: 3), maxTokens: 1, user: Int64(100 + i))))
            if h.scheduler.step().admitted.contains("long") { admittedAt = h.clock.now }
            h.clock.advance(0.5)
        }
        let waited = try XCTUnwrap(admittedAt, "the long prompt was never admitted")
        XCTAssertGreaterThanOrEqual(waited, 29.5, "short questions go first while the long prompt is young")
        XCTAssertLessThanOrEqual(waited, 30.5, "after 300 / 10 s it goes ahead of newer short ones")
        withExtendedLifetime(streams) {}
    }

    func testBesideStreamingRepliesAStepFitsTheTarget() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(
                maxRunningSequences: 2, prefillTokensPerStep: 256,
                timeToFirstTokenTarget: 100, interTokenLatencyTarget: 0.5, stepMargin: 1),
            blocks: 400, model: EngineFixture.model(maxPositions: 2048))
        // Steps cost 0.295 s + 10 ms per row (the clock stands still, so the speed stays 1):
        // beside one decode row, 19 prompt tokens fit in 0.5 s.
        h.scheduler.cost = StepCostModel(fixed: 0.295, perRow: 0.01)
        let short = try h.scheduler.trySubmit(h.job("short", prompt: EngineFixture.prompt(6, seed: 4), maxTokens: 8))
        let long = try h.scheduler.trySubmit(h.job("long", prompt: EngineFixture.prompt(1200, seed: 5), maxTokens: 1))
        // Nothing streams yet: the whole budget, the short prompt first.
        XCTAssertEqual(h.scheduler.step().prefilled, [.init(requestId: "short", tokens: 6), .init(requestId: "long", tokens: 250)])
        var chunks: [Int] = []
        while h.scheduler.runningRequestIds.contains("short") {
            let report = h.scheduler.step()
            XCTAssertEqual(report.decoded, ["short"])
            chunks.append(report.prefilled.first { $0.requestId == "long" }?.tokens ?? 0)
        }
        XCTAssertEqual(chunks, Array(repeating: 19, count: 7))
        // Nobody streams again: back to full chunks at once.
        XCTAssertEqual(h.scheduler.step().prefilled, [.init(requestId: "long", tokens: 256)])
        withExtendedLifetime((short, long)) {}
    }

    func testStepsThatOverrunTheirPredictionShortenThePlannedStep() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 2, interTokenLatencyTarget: 0.5, stepMargin: 0.9),
            model: EngineFixture.model(maxPositions: 2048))
        // Every step is predicted to last 0.1 s; the clock moves 0.125 s from one step's start to
        // the next (the step and the work between steps): the p95 overrun is 1.25, so steps are
        // planned for 0.5 s x 0.8 instead of 0.5 s x 0.9.
        h.scheduler.cost = StepCostModel(fixed: 0.1, perRow: 0)
        XCTAssertEqual(h.scheduler.plannedStepSeconds!, 0.45, accuracy: 1e-12)
        let stream = try h.scheduler.trySubmit(h.job("a", prompt: EngineFixture.prompt(4, seed: 7), maxTokens: 60))
        for _ in 0..<50 {
            h.scheduler.step()
            h.clock.advance(0.125)
        }
        XCTAssertEqual(h.scheduler.plannedStepSeconds!, 0.4, accuracy: 1e-9)
        withExtendedLifetime(stream) {}
    }

    func testWhenDecodeRowsFillTheStepPromptsStillProgress() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(
                maxRunningSequences: 2, prefillTokensPerStep: 256,
                interTokenLatencyTarget: 0.5, stepMargin: 1),
            blocks: 400, model: EngineFixture.model(maxPositions: 2048))
        h.scheduler.cost = StepCostModel(fixed: 0.1, perRow: 0.01)
        let short = try h.scheduler.trySubmit(h.job("short", prompt: EngineFixture.prompt(6, seed: 4), maxTokens: 12))
        let long = try h.scheduler.trySubmit(h.job("long", prompt: EngineFixture.prompt(600, seed: 5), maxTokens: 1))
        XCTAssertEqual(h.scheduler.step().admitted, ["short", "long"])
        // Then the box slows down: one decode row alone costs 0.495 s, no prompt token fits beside it.
        h.scheduler.cost = StepCostModel(fixed: 0.485, perRow: 0.01)
        var chunks: [Int] = []
        for _ in 0..<10 {
            chunks.append(h.scheduler.step().prefilled.first { $0.requestId == "long" }?.tokens ?? 0)
        }
        XCTAssertEqual(
            chunks, [0, 0, 0, 0, 16, 0, 0, 0, 0, 16], "the minimum chunk after every \(SchedulerSettings.starvationSteps) starved steps")
        withExtendedLifetime((short, long)) {}
    }

    func testShortPromptIsNotStuckBehindTheSameUsersLongPrompt() throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 32, interTokenLatencyTarget: nil))
        let long = try h.scheduler.trySubmit(h.job("long", prompt: EngineFixture.prompt(200, seed: 6), maxTokens: 2))
        let short = try h.scheduler.trySubmit(h.job("short", prompt: EngineFixture.prompt(6, seed: 7), maxTokens: 3))
        let first = h.scheduler.step()
        XCTAssertEqual(first.admitted, ["short", "long"], "shortest remaining prompt first")
        XCTAssertEqual(
            first.prefilled, [.init(requestId: "short", tokens: 6), .init(requestId: "long", tokens: 26)],
            "the short prompt is prefilled in the first step; the long one takes the rest of the budget")
        let second = h.scheduler.step()
        XCTAssertEqual(second.decoded, ["short"])
        XCTAssertEqual(second.prefilled, [.init(requestId: "long", tokens: 32)])
        h.runToCompletion()
        XCTAssertEqual(h.log["short"], try EngineFixture.alone(h.model, prompt: EngineFixture.prompt(6, seed: 7), maxTokens: 3))
        XCTAssertEqual(h.log["long"], try EngineFixture.alone(h.model, prompt: EngineFixture.prompt(200, seed: 6), maxTokens: 2))
        withExtendedLifetime((short, long)) {}
    }

    func testFullQueueIsRefusedAtOnce() async throws {
        let h = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 1, queueLimit: 2, maxAcceptedPerUser: 3, retryAfterSeconds: 3))
        let streams = try (0..<3).map {
            try h.scheduler.trySubmit(h.job("ok\($0)", prompt: EngineFixture.prompt(4, seed: 1), maxTokens: 1))
        }
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("late", prompt: [1], maxTokens: 1))) {
            XCTAssertEqual($0 as? ChatEngineError, .busy(retryAfterSeconds: 3))
        }
        // Through the non-throwing entry point the same refusal is the stream's first and only result.
        let refused = await collect(h.scheduler.submit(h.job("late2", prompt: [1], maxTokens: 1)))
        XCTAssertEqual(refused.events, [])
        XCTAssertEqual(refused.error as? ChatEngineError, .busy(retryAfterSeconds: 3))
        h.runToCompletion()
        for s in streams { let r = await collect(s); XCTAssertNil(r.error) }
        XCTAssertNoThrow(try h.scheduler.trySubmit(h.job("after", prompt: [1], maxTokens: 1)), "room again once the queue drained")
    }
}

/// Cancellation and failures end only the request concerned.
final class SchedulerLifecycleTests: XCTestCase {
    func testCancellationFreesBlocksWithinOneStep() async throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 1, queueLimit: 4))
        let keep = try h.scheduler.trySubmit(h.job("keep", prompt: EngineFixture.prompt(30, seed: 1), maxTokens: 40))
        let queued = try h.scheduler.trySubmit(h.job("queued", prompt: EngineFixture.prompt(30, seed: 2), maxTokens: 40))
        for _ in 0..<3 { h.scheduler.step() }
        XCTAssertEqual(h.scheduler.runningRequestIds, ["keep"])
        XCTAssertEqual(h.scheduler.waitingRequestIds, ["queued"])
        XCTAssertGreaterThan(h.cache.usedBlockCount, 0)

        // The consumers go away: one running, one queued.
        for stream in [keep, queued] {
            let consumer = Task { for try await _ in stream {} }
            consumer.cancel()
            _ = await consumer.result
        }
        let report = h.scheduler.step()
        XCTAssertEqual(report.decoded, [], "nothing is decoded for a cancelled request")
        XCTAssertEqual(h.scheduler.runningRequestIds, [])
        XCTAssertEqual(h.scheduler.waitingRequestIds, [])
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount, "the pool is full again after one step")
        XCTAssertEqual(h.scheduler.activeRequestCount, 0)
    }

    func testBadRequestFailsAloneAndOthersContinue() async throws {
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 64))
        let good1 = EngineFixture.prompt(12, seed: 41), good2 = EngineFixture.prompt(20, seed: 42)
        let s1 = try h.scheduler.trySubmit(h.job("good1", prompt: good1, maxTokens: 8))
        h.scheduler.step()
        // A token id outside the model's vocabulary reaches the engine while good1 is decoding.
        let bad = try h.scheduler.trySubmit(h.job("bad", prompt: [3, 4, 9999, 5], maxTokens: 8))
        let s2 = try h.scheduler.trySubmit(h.job("good2", prompt: good2, maxTokens: 8))
        h.runToCompletion()

        let b = await collect(bad)
        guard case .invalidRequest(let message)? = b.error as? ChatEngineError else {
            return XCTFail("expected invalidRequest for the bad request, got \(String(describing: b.error))")
        }
        XCTAssertTrue(message.contains("9999"), message)
        for (id, prompt, stream) in [("good1", good1, s1), ("good2", good2, s2)] {
            let r = await collect(stream)
            XCTAssertNil(r.error)
            XCTAssertEqual(h.log[id], try EngineFixture.alone(h.model, prompt: prompt, maxTokens: 8), id)
        }
        XCTAssertEqual(h.cache.freeBlockCount, h.cache.blockCount)
    }

    func testWarmUpRunsTheLargestStepThatFitsAndGivesTheBlocksBack() throws {
        // 6 blocks of 4 positions: the full step (512 prompt rows + 7 decode rows) cannot fit; the
        // warm-up shrinks to what the pool holds (4 prompt rows + 5 decode rows) instead of failing.
        let small = try SchedulerHarness(
            settings: SchedulerSettings(maxRunningSequences: 8, prefillTokensPerStep: 512), blocks: 6, contextLength: 64)
        XCTAssertNoThrow(try small.scheduler.warmUp())
        XCTAssertEqual(small.cache.freeBlockCount, small.cache.blockCount)
        let roomy = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 4, prefillTokensPerStep: 40), blocks: 64)
        XCTAssertNoThrow(try roomy.scheduler.warmUp())
        XCTAssertEqual(roomy.cache.freeBlockCount, roomy.cache.blockCount)
        // The engine still serves normally afterwards.
        let stream = try roomy.scheduler.trySubmit(roomy.job("after", prompt: EngineFixture.prompt(5, seed: 8), maxTokens: 3))
        roomy.runToCompletion()
        XCTAssertEqual(roomy.log["after"], try EngineFixture.alone(roomy.model, prompt: EngineFixture.prompt(5, seed: 8), maxTokens: 3))
        withExtendedLifetime(stream) {}
    }

    func testShutdownFailsWhatIsQueued() async throws {
        let h = try SchedulerHarness(settings: SchedulerSettings())
        let stream = try h.scheduler.trySubmit(h.job("x", prompt: [1, 2, 3], maxTokens: 4))
        h.scheduler.shutdown()
        let r = await collect(stream)
        XCTAssertEqual(r.error as? ChatEngineError, .failed("the engine is shutting down"))
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("y", prompt: [1], maxTokens: 1)))
    }
}
