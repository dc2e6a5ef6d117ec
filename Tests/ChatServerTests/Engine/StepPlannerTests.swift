// The step planner against its pure interface: requests, the KV pool and the step costs as
// values; no model, no cache, no threads, no clock. Each expected plan is worked out by hand from
// the policy's rules.
import TestSupport
import XCTest
@testable import ChatServer

final class StepPlannerTests: XCTestCase {
    /// 4-position blocks; a waiting request asks room for its tokens plus 4 reply positions.
    private let pool = KVPoolState(freeBlocks: 100, blockSize: 4)
    /// A step: 20 ms plus 1 ms per row (decode row or prompt token), attention free.
    private let cost = StepCostModel(fixed: 0.020, perRow: 0.001)

    private func waiting(_ id: UInt64, user: Int64 = 0, tokens: Int, waited: Double = 0) -> PlannerRequest {
        PlannerRequest(id: id, userId: user, tokens: tokens, plannedLength: tokens + 4, waitedSeconds: waited)
    }

    /// A running request: `computed` positions in blocks of 4 (all its own), prompt processed when decoding.
    private func running(
        _ id: UInt64, user: Int64 = 0, tokens: Int, computed: Int, decoding: Bool = false,
        waited: Double = 0
    ) -> PlannerRequest {
        let blocks = (computed + 3) / 4
        return PlannerRequest(
            id: id, userId: user, tokens: tokens, computed: computed, blocksHeld: blocks,
            plannedLength: tokens + 4, promptProcessed: decoding, waitedSeconds: waited)
    }

    // MARK: Admission

    func testShortestPromptIsAdmittedFirstUpToTheCapacity() {
        let planner = StepPlanner(capacity: 3)
        let queue = [
            waiting(1, user: 1, tokens: 900), waiting(2, user: 2, tokens: 30), waiting(3, user: 3, tokens: 500),
            waiting(4, user: 4, tokens: 20),
        ]
        let busy = [running(9, user: 9, tokens: 5, computed: 4, decoding: true)]
        XCTAssertEqual(
            planner.admissions(waiting: queue, running: busy, pool: pool, cost: cost).admitted, [4, 2],
            "two free slots, taken by the two shortest prompts")
    }

    func testWaitingMovesALongPromptAhead() {
        let planner = StepPlanner(capacity: 1, agingTokensPerSecond: 100)
        // 900 tokens after 9 s count as 0: ahead of a 30-token prompt that just came.
        let old = waiting(1, user: 1, tokens: 900, waited: 9.5)
        XCTAssertEqual(
            planner.admissions(waiting: [waiting(2, user: 2, tokens: 30), old], running: [], pool: pool, cost: cost).admitted, [1])
        XCTAssertEqual(
            planner.admissions(
                waiting: [waiting(2, user: 2, tokens: 30), waiting(1, user: 1, tokens: 900, waited: 8)],
                running: [], pool: pool, cost: cost
            ).admitted, [2], "after 8 s it still counts as 100 tokens")
    }

    func testAHardPerUserCapSkipsButDoesNotBlock() {
        let planner = StepPlanner(capacity: 4, maxRunningPerUser: 2)
        let queue = [
            waiting(1, user: 7, tokens: 8), waiting(2, user: 7, tokens: 8), waiting(3, user: 7, tokens: 8), waiting(4, user: 8, tokens: 9),
        ]
        XCTAssertEqual(
            planner.admissions(waiting: queue, running: [], pool: pool, cost: cost).admitted, [1, 2, 4],
            "user 7 is capped at 2: its third request waits and user 8's request overtakes it")
    }

    func testWithoutACapAUserTakesMoreThanItsShareOnlyWhenNobodyElseWaits() {
        let planner = StepPlanner(capacity: 4)
        let alone = (1...4).map { waiting(UInt64($0), user: 7, tokens: 8) }
        XCTAssertEqual(planner.admissions(waiting: alone, running: [], pool: pool, cost: cost).admitted, [1, 2, 3, 4])
        // Users 7 and 8 both wait: shares of 4 / 2; user 8's longer prompt still gets its slots.
        let both = alone + [waiting(5, user: 8, tokens: 50), waiting(6, user: 8, tokens: 50)]
        XCTAssertEqual(planner.admissions(waiting: both, running: [], pool: pool, cost: cost).admitted, [1, 2, 5, 6])
        // User 8's requests are all admitted: user 7 may fill the rest.
        let ahead = [running(5, user: 8, tokens: 50, computed: 0, decoding: true)]
        XCTAssertEqual(planner.admissions(waiting: alone, running: ahead, pool: pool, cost: cost).admitted, [1, 2, 3])
    }

    func testAShortQuestionDisplacesALongPasteThatHasNotStreamedYet() {
        let planner = StepPlanner(capacity: 2, agingTokensPerSecond: 100)
        let streaming = running(1, user: 1, tokens: 41, computed: 40, decoding: true)
        let pasting = running(2, user: 2, tokens: 1000, computed: 200, waited: 1)
        let question = waiting(3, user: 3, tokens: 30)
        XCTAssertEqual(
            planner.admissions(waiting: [question], running: [streaming, pasting], pool: pool, cost: cost),
            Admission(admitted: [3], displaced: [2]), "the paste (800 - 100 left) waits again; the question takes its slot")
        // A reply that streams is never displaced; nor is a paste that has waited long enough to be ahead.
        let twoStreaming = [streaming, running(4, user: 4, tokens: 9, computed: 8, decoding: true)]
        XCTAssertEqual(planner.admissions(waiting: [question], running: twoStreaming, pool: pool, cost: cost), Admission())
        var patient = pasting
        patient.waitedSeconds = 9
        XCTAssertEqual(planner.admissions(waiting: [question], running: [streaming, patient], pool: pool, cost: cost), Admission())
    }

    func testARequestThatDoesNotFitTheKVPoolStopsAdmission() {
        let planner = StepPlanner(capacity: 8)
        // Running: 20 tokens, 20 computed (5 blocks), planned 24 -> owes 1 block. Free 10.
        let busy = [running(9, tokens: 20, computed: 20)]
        let small = KVPoolState(freeBlocks: 10, blockSize: 4)
        // Request 1 needs ceil(24/4) = 6 (owed 1 + 6 = 7 <= 10); request 2 needs 6 more (13 > 10):
        // it stops admission, so request 3 (longer, needs 7) does not get in either.
        let queue = [waiting(1, user: 1, tokens: 20), waiting(2, user: 2, tokens: 21), waiting(3, user: 3, tokens: 24)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: small, cost: cost).admitted, [1])
    }

    func testAnEmptyEngineTakesTheFirstRequestEvenIfItsHeadroomDoesNotFit() {
        let planner = StepPlanner(capacity: 8)
        let tiny = KVPoolState(freeBlocks: 2, blockSize: 4)
        XCTAssertEqual(
            planner.admissions(waiting: [waiting(1, tokens: 7), waiting(2, tokens: 9)], running: [], pool: tiny, cost: cost).admitted, [1],
            "alone it may run (its prompt fits the pool); the next one must fit beside it")
    }

    func testDecodeRowsMustLeaveTheReserveForPrompts() {
        // Target 0.2 s, reserve 0.3: decode rows may take 0.14 s = 20 ms + 24 rows of 5 ms.
        let planner = StepPlanner(capacity: 64, stepTarget: 0.2, prefillReserve: 0.3)
        let fiveMs = StepCostModel(fixed: 0.020, perRow: 0.005)
        let busy = (1...20).map { running(UInt64($0), user: Int64($0), tokens: 9, computed: 8, decoding: true) }
        let queue = (21...25).map { waiting(UInt64($0), user: Int64($0), tokens: 10) }
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: pool, cost: fiveMs).admitted, [21, 22, 23, 24])
        XCTAssertEqual(StepPlanner.decodeCapacity(cost: fiveMs, stepTarget: 0.2, prefillReserve: 0.3, contextPerRow: 1000, ceiling: 64), 24)
        XCTAssertEqual(StepPlanner.decodeCapacity(cost: fiveMs, stepTarget: 0.2, prefillReserve: 0.3, contextPerRow: 1000, ceiling: 5), 5)
        // Attention counts: at 1 ms per 1,024 attended positions, rows of 2,048 positions cost 7 ms.
        let attending = StepCostModel(fixed: 0.020, perRow: 0.005, attentionSecondsPer1024: 0.001)
        XCTAssertEqual(
            StepPlanner.decodeCapacity(cost: attending, stepTarget: 0.2, prefillReserve: 0.3, contextPerRow: 2048, ceiling: 64), 17)
    }

    // MARK: Batching: what fits the step

    func testBesideDecodeRowsThePromptTokensFitTheStepTarget() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let set = [
            running(1, tokens: 11, computed: 10, decoding: true), running(2, user: 1, tokens: 1000, computed: 0),
            running(3, tokens: 21, computed: 20, decoding: true),
        ]
        // 0.2 s = 20 ms + 180 rows: 2 decode rows and 178 prompt tokens.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost), StepPlan(decode: [1, 3], prefill: [.init(id: 2, tokens: 178)]))
        // With attention at 1 ms per 1,024 attended positions, the chunk is the largest whose
        // prompt rows and attention fit beside the decode rows.
        let attending = StepCostModel(fixed: 0.020, perRow: 0.001, attentionSecondsPer1024: 0.001)
        let n = planner.batch(running: set, pool: pool, cost: attending).prefill.first!.tokens
        let seconds = { (k: Int) in attending.predict(rows: 2 + k, attendedPositions: 11 + 21 + StepCostModel.attended(tokens: k, from: 0))
        }
        XCTAssertLessThanOrEqual(seconds(n), 0.2 + 1e-12)
        XCTAssertGreaterThan(seconds(n + 1), 0.2, "the largest chunk that fits")
    }

    func testPromptTokensCostLessThanDecodeRowsWhenLogitsAreCharged() {
        // 20 ms + 1 ms per row + 0.4 ms per row with logits; target 0.2 s. A chunk in the middle of
        // a prompt fills what the two decode rows leave; one that ends the prompt pays its logits
        // row too.
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let logits = StepCostModel(fixed: 0.020, perRow: 0.001, logitRowSeconds: 0.0004)
        let decoding = [running(1, tokens: 11, computed: 10, decoding: true), running(3, tokens: 21, computed: 20, decoding: true)]
        let long = planner.batch(running: decoding + [running(2, user: 1, tokens: 1000, computed: 0)], pool: pool, cost: logits)
        XCTAssertEqual(long.prefill, [.init(id: 2, tokens: 177)], "20 ms + 179 rows x 1 ms + 2 logits rows x 0.4 ms = 0.1998 s")
        let ending = planner.batch(running: decoding + [running(2, user: 1, tokens: 177, computed: 0)], pool: pool, cost: logits)
        XCTAssertEqual(ending.prefill, [.init(id: 2, tokens: 176)], "the whole prompt would need a third logits row: 0.2002 s")
        XCTAssertEqual(logits.predict(rows: 10, logitRows: 2, attendedPositions: 0), 0.020 + 0.010 + 0.0008, accuracy: 1e-12)
        XCTAssertEqual(
            logits.predict(rows: 10, attendedPositions: 0), 0.020 + 0.010 + 0.004, accuracy: 1e-12, "decode rows: all have logits")
    }

    func testAPromptOnlyStepStaysWithinItsTarget() {
        // Nobody streams, but a short prompt arriving now would wait for this step: at 20 ms + 1 ms
        // a row it takes what fits 0.1995 s (179 tokens), not the whole 512 budget; the next
        // request in line gets nothing more once the first has filled it.
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, promptStepTarget: 0.1995, maxPrefillTokens: 512)
        let set = [running(1, tokens: 1000, computed: 0), running(2, user: 1, tokens: 2000, computed: 0)]
        XCTAssertEqual(
            planner.batch(running: set, pool: KVPoolState(freeBlocks: 1000, blockSize: 4), cost: cost).prefill, [.init(id: 1, tokens: 179)])
        // A box so slow that not even one token fits still moves on by minPrefillTokens.
        let slow = StepCostModel(fixed: 1, perRow: 0.001)
        XCTAssertEqual(
            planner.batch(running: set, pool: KVPoolState(freeBlocks: 1000, blockSize: 4), cost: slow).prefill, [.init(id: 1, tokens: 16)])
    }

    func testWithoutStreamingRepliesAStepPrefillsTheWholeBudget() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let set = [running(1, tokens: 1000, computed: 0), running(2, user: 1, tokens: 1000, computed: 600)]
        XCTAssertEqual(
            planner.batch(running: set, pool: KVPoolState(freeBlocks: 1000, blockSize: 4), cost: cost).prefill,
            [.init(id: 1, tokens: 112), .init(id: 2, tokens: 400)], "the fewest tokens left first: 400, then 112 of the other")
    }

    func testShortPromptsAreGrantedBeforeLongPrefills() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512, agingTokensPerSecond: 100)
        let set = [
            running(1, tokens: 11, computed: 10, decoding: true), running(2, user: 1, tokens: 1000, computed: 300),
            running(3, user: 2, tokens: 40, computed: 0), running(4, user: 3, tokens: 1000, computed: 0, waited: 20),
        ]
        // 0.2 s = 20 ms + 1 decode row + 179 prompt tokens: request 4 has waited 20 s
        // (1000 - 2000 < 0): it goes first and takes them all.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost).prefill, [.init(id: 4, tokens: 179)])
        var young = set
        young[3].waitedSeconds = 0
        // Young: 40 tokens (request 3) first, then 139 of request 2's 700.
        XCTAssertEqual(
            planner.batch(running: young, pool: pool, cost: cost).prefill, [.init(id: 2, tokens: 139), .init(id: 3, tokens: 40)])
    }

    func testDecodeRowsThatFillTheStepStarveNoPromptForLong() {
        let planner = StepPlanner(capacity: 64, stepTarget: 0.2, minPrefillTokens: 16)
        let tenMs = StepCostModel(fixed: 0.020, perRow: 0.010)
        let set = (1...18).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) } + [running(21, tokens: 500, computed: 0)]
        // 20 + 18 x 10 ms = 0.2 s: no prompt token fits beside the decode rows.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: tenMs, starvedSteps: 0).prefill, [])
        XCTAssertEqual(
            planner.batch(running: set, pool: pool, cost: tenMs, starvedSteps: SchedulerSettings.starvationSteps).prefill,
            [.init(id: 21, tokens: 16)])
    }

    func testTokensFittingIsTheLargestThatFits() {
        for bound in [0, 1, 2, 50, 399, 400, 1000] {
            let n = StepPlanner.tokensFitting(upTo: 400) { $0 * $0 <= bound * bound }
            XCTAssertEqual(n, min(bound, 400), "bound \(bound)")
        }
    }

    // MARK: Preemption

    func testWhenTheStepDoesNotFitTheYoungestIsPreempted() {
        let planner = StepPlanner(capacity: 8)
        // Three decoding requests at a block boundary (8 computed, 9 tokens): each needs one new block.
        let set = (1...3).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) }
        let plan = planner.batch(running: set, pool: KVPoolState(freeBlocks: 1, blockSize: 4), cost: cost)
        // Needs 3, has 1: preempting request 3 frees its 2 blocks (1 + 2 = 3 >= 2 still needed).
        XCTAssertEqual(plan, StepPlan(decode: [1, 2], preempted: [3]))
    }

    func testSharedBlocksDoNotCountAsFreedByPreemption() {
        let planner = StepPlanner(capacity: 8)
        var set = (1...3).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) }
        // Request 3's two blocks are shared with others (a common system prompt): preempting it frees none.
        set[2].releasableBlocks = 0
        let plan = planner.batch(running: set, pool: KVPoolState(freeBlocks: 1, blockSize: 4), cost: cost)
        XCTAssertEqual(plan, StepPlan(decode: [1], preempted: [3, 2]), "3 frees nothing, so 2 goes too")
    }

    func testALoneRequestThatCannotGrowFails() {
        let planner = StepPlanner(capacity: 8)
        let plan = planner.batch(
            running: [running(1, tokens: 9, computed: 8, decoding: true)],
            pool: KVPoolState(freeBlocks: 0, blockSize: 4), cost: cost)
        XCTAssertEqual(plan, StepPlan(failed: [1]))
    }
}

/// The step cost model: a measured curve of rows, attention per attended position, and the
/// machine's current speed learned from the steps.
final class StepCostModelTests: XCTestCase {
    private let measured = StepCostModel(
        curve: [
            .init(rows: 1, seconds: 0.020), .init(rows: 8, seconds: 0.050),
            .init(rows: 16, seconds: 0.080), .init(rows: 512, seconds: 1.5),
        ],
        attentionSecondsPer1024: 0.002)

    func testTheCurveIsInterpolatedAndExtended() {
        XCTAssertEqual(measured.predict(rows: 8, attendedPositions: 0), 0.050, accuracy: 1e-12)
        XCTAssertEqual(measured.predict(rows: 4, attendedPositions: 0), 0.020 + 3 * 0.030 / 7, accuracy: 1e-12)
        XCTAssertEqual(measured.predict(rows: 12, attendedPositions: 0), 0.065, accuracy: 1e-12)
        XCTAssertEqual(
            measured.predict(rows: 1024, attendedPositions: 0), 1.5 + 512 * 1.42 / 496, accuracy: 1e-12,
            "beyond the last point along the last segment")
        XCTAssertEqual(measured.predict(rows: 8, attendedPositions: 4096), 0.050 + 4 * 0.002, accuracy: 1e-12)
        XCTAssertEqual(measured.predict(rows: 0, attendedPositions: 100), 0, "no rows, no step")
        XCTAssertEqual(StepCostModel.attended(tokens: 3, from: 10), 11 + 12 + 13)
    }

    func testTheSpeedFollowsTheSteps() {
        var model = measured
        // The box got busy: every step takes twice the measured time.
        for _ in 0..<40 { model.record(rows: 16, attendedPositions: 2048, seconds: 2 * (0.080 + 0.004)) }
        XCTAssertEqual(model.speed, 2, accuracy: 0.01)
        XCTAssertEqual(model.predict(rows: 8, attendedPositions: 0), 0.100, accuracy: 0.001)
        // Nonsense is ignored; a stall moves the speed by at most its bound.
        model.record(rows: 16, attendedPositions: 0, seconds: .nan)
        model.record(rows: 0, attendedPositions: 0, seconds: 1)
        XCTAssertEqual(model.observations, 40)
        model.record(rows: 1, attendedPositions: 0, seconds: 1_000)
        XCTAssertEqual(model.speed, 2.4, accuracy: 0.001, "one stall counts as a step twice as slow: 2 + 0.2 x (4 - 2)")
    }

    func testLogitsRowsAreChargedOnTopOfTheRows() {
        var model = StepCostModel(curve: measured.curve, attentionSecondsPer1024: 0.002, logitRowSeconds: 0.001)
        XCTAssertEqual(model.predict(rows: 16, logitRows: 0, attendedPositions: 0), 0.080, accuracy: 1e-12, "prompt rows only")
        XCTAssertEqual(model.predict(rows: 16, attendedPositions: 0), 0.096, accuracy: 1e-12, "16 decode rows")
        XCTAssertEqual(model.predict(rows: 16, logitRows: 40, attendedPositions: 0), 0.096, accuracy: 1e-12, "at most one per row")
        // The speed is learned against the same prediction: a mixed step that took what was predicted leaves it at 1.
        for _ in 0..<10 { model.record(rows: 16, logitRows: 4, attendedPositions: 0, seconds: 0.084) }
        XCTAssertEqual(model.speed, 1, accuracy: 1e-9)
    }
}

/// The planned share of the inter-token target follows how much steps overrun their predictions.
final class StepMarginTests: XCTestCase {
    func testStepsAsPredictedKeepTheHighestShare() {
        var margin = StepMargin(highest: 0.9)
        XCTAssertEqual(margin.value, 0.9, "before any step")
        for _ in 0..<100 { margin.record(actual: 0.1, predicted: 0.1) }
        XCTAssertEqual(margin.value, 0.9)
    }

    func testOverrunsLowerTheShareToTheirNinetyFifthPercentile() {
        var margin = StepMargin(highest: 0.9)
        // 90 % of steps as predicted, 10 % a quarter longer: p95 is 1.25, so plan 0.8 of the target.
        for i in 0..<200 { margin.record(actual: i % 10 == 0 ? 0.125 : 0.1, predicted: 0.1) }
        XCTAssertEqual(margin.value, 0.8, accuracy: 1e-12)
        // Only 4 % overrun: the p95 step is as predicted again (the window holds the last 200).
        for i in 0..<200 { margin.record(actual: i % 25 == 0 ? 0.125 : 0.1, predicted: 0.1) }
        XCTAssertEqual(margin.value, 0.9, accuracy: 1e-12)
    }

    func testTheShareNeedsEnoughStepsAndStaysWithinBounds() {
        var margin = StepMargin(highest: 0.9)
        for _ in 0..<(StepMargin.minimumSamples - 1) { margin.record(actual: 1, predicted: 0.1) }
        XCTAssertEqual(margin.value, 0.9, "too few steps to judge")
        margin.record(actual: 1, predicted: 0.1)
        XCTAssertEqual(margin.value, StepMargin.lowest, "ten times over: the lowest share, not 0.1")
        margin.record(actual: .nan, predicted: 0.1)
        margin.record(actual: 0.1, predicted: 0)
        XCTAssertEqual(margin.value, StepMargin.lowest, "nonsense is ignored")
    }
}
