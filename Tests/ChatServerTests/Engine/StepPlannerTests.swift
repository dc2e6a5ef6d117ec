// The step planner against its pure interface: requests, the KV pool and the step costs as
// values; no model, no cache, no threads, no clock. Each expected plan is worked out by hand from
// the policy's rules.
import TestSupport
import XCTest
@testable import ChatServer

final class StepPlannerTests: XCTestCase {
    /// 4-position blocks; a waiting request asks room for its tokens plus 4 reply positions.
    private let pool = KVPoolState(freeBlocks: 100, blockSize: 4)
    /// A step: 20 ms, plus 10 ms per decode row, plus 1 ms per prompt token (attention free).
    private let cost = StepCostModel(prior: [0.020, 0.010, 0.001, 0])

    private func waiting(_ id: UInt64, user: Int64 = 0, tokens: Int, waited: Double = 0) -> PlannerRequest {
        PlannerRequest(id: id, userId: user, tokens: tokens, plannedLength: tokens + 4, waitedSeconds: waited)
    }

    /// A running request: `computed` positions in blocks of 4 (all its own), prompt processed when decoding.
    private func running(_ id: UInt64, user: Int64 = 0, tokens: Int, computed: Int, decoding: Bool = false,
                         waited: Double = 0) -> PlannerRequest {
        let blocks = (computed + 3) / 4
        return PlannerRequest(id: id, userId: user, tokens: tokens, computed: computed, blocksHeld: blocks,
                              plannedLength: tokens + 4, promptProcessed: decoding, waitedSeconds: waited)
    }

    // MARK: Admission

    func testShortestPromptIsAdmittedFirstUpToTheCapacity() {
        let planner = StepPlanner(capacity: 3)
        let queue = [waiting(1, user: 1, tokens: 900), waiting(2, user: 2, tokens: 30), waiting(3, user: 3, tokens: 500),
                     waiting(4, user: 4, tokens: 20)]
        let busy = [running(9, user: 9, tokens: 5, computed: 4, decoding: true)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: pool, cost: cost), [4, 2],
                       "two free slots, taken by the two shortest prompts")
    }

    func testWaitingMovesALongPromptAhead() {
        let planner = StepPlanner(capacity: 1, agingTokensPerSecond: 100)
        // 900 tokens after 9 s count as 0: ahead of a 30-token prompt that just came.
        let old = waiting(1, user: 1, tokens: 900, waited: 9.5)
        XCTAssertEqual(planner.admissions(waiting: [waiting(2, user: 2, tokens: 30), old], running: [], pool: pool, cost: cost), [1])
        XCTAssertEqual(planner.admissions(waiting: [waiting(2, user: 2, tokens: 30), waiting(1, user: 1, tokens: 900, waited: 8)],
                                          running: [], pool: pool, cost: cost), [2], "after 8 s it still counts as 100 tokens")
    }

    func testAHardPerUserCapSkipsButDoesNotBlock() {
        let planner = StepPlanner(capacity: 4, maxRunningPerUser: 2)
        let queue = [waiting(1, user: 7, tokens: 8), waiting(2, user: 7, tokens: 8), waiting(3, user: 7, tokens: 8), waiting(4, user: 8, tokens: 9)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: [], pool: pool, cost: cost), [1, 2, 4],
                       "user 7 is capped at 2: its third request waits and user 8's request overtakes it")
    }

    func testWithoutACapAUserTakesMoreThanItsShareOnlyWhenNobodyElseWaits() {
        let planner = StepPlanner(capacity: 4)
        let alone = (1...4).map { waiting(UInt64($0), user: 7, tokens: 8) }
        XCTAssertEqual(planner.admissions(waiting: alone, running: [], pool: pool, cost: cost), [1, 2, 3, 4])
        // Users 7 and 8 both wait: shares of 4 / 2; user 8's longer prompt still gets its slots.
        let both = alone + [waiting(5, user: 8, tokens: 50), waiting(6, user: 8, tokens: 50)]
        XCTAssertEqual(planner.admissions(waiting: both, running: [], pool: pool, cost: cost), [1, 2, 5, 6])
        // User 8's requests are all admitted: user 7 may fill the rest.
        let ahead = [running(5, user: 8, tokens: 50, computed: 0)]
        XCTAssertEqual(planner.admissions(waiting: alone, running: ahead, pool: pool, cost: cost), [1, 2, 3])
    }

    func testARequestThatDoesNotFitTheKVPoolStopsAdmission() {
        let planner = StepPlanner(capacity: 8)
        // Running: 20 tokens, 20 computed (5 blocks), planned 24 -> owes 1 block. Free 10.
        let busy = [running(9, tokens: 20, computed: 20)]
        let small = KVPoolState(freeBlocks: 10, blockSize: 4)
        // Request 1 needs ceil(24/4) = 6 (owed 1 + 6 = 7 <= 10); request 2 needs 6 more (13 > 10):
        // it stops admission, so request 3 (longer, needs 7) does not get in either.
        let queue = [waiting(1, user: 1, tokens: 20), waiting(2, user: 2, tokens: 21), waiting(3, user: 3, tokens: 24)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: small, cost: cost), [1])
    }

    func testAnEmptyEngineTakesTheFirstRequestEvenIfItsHeadroomDoesNotFit() {
        let planner = StepPlanner(capacity: 8)
        let tiny = KVPoolState(freeBlocks: 2, blockSize: 4)
        XCTAssertEqual(planner.admissions(waiting: [waiting(1, tokens: 7), waiting(2, tokens: 9)], running: [], pool: tiny, cost: cost), [1],
                       "alone it may run (its prompt fits the pool); the next one must fit beside it")
    }

    func testDecodeRowsMustLeaveTheReserveForPrompts() {
        // Target 0.2 s, reserve 0.3: decode rows may take 0.14 s = 20 ms + 12 rows of 10 ms.
        let planner = StepPlanner(capacity: 64, stepTarget: 0.2, prefillReserve: 0.3)
        let busy = (1...10).map { running(UInt64($0), user: Int64($0), tokens: 9, computed: 8, decoding: true) }
        let queue = (11...15).map { waiting(UInt64($0), user: Int64($0), tokens: 10) }
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: pool, cost: cost), [11, 12])
        XCTAssertEqual(StepPlanner.decodeCapacity(cost: cost, stepTarget: 0.2, prefillReserve: 0.3, contextPerRow: 1000, ceiling: 64), 12)
        XCTAssertEqual(StepPlanner.decodeCapacity(cost: cost, stepTarget: 0.2, prefillReserve: 0.3, contextPerRow: 1000, ceiling: 5), 5)
    }

    // MARK: Batching: what fits the step

    func testBesideDecodeRowsThePromptTokensFitTheStepTarget() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let set = [running(1, tokens: 11, computed: 10, decoding: true), running(2, user: 1, tokens: 1000, computed: 0),
                   running(3, tokens: 21, computed: 20, decoding: true)]
        // 0.2 - (20 + 2 x 10) ms = 160 ms = 160 prompt tokens.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost), StepPlan(decode: [1, 3], prefill: [.init(id: 2, tokens: 160)]))
        // With attention at 1 ms per 1,024 attended positions, the chunk is the largest whose
        // prompt rows and attention fit beside the decode rows.
        let attending = StepCostModel(prior: [0.020, 0.010, 0.001, 0.001])
        let n = planner.batch(running: set, pool: pool, cost: attending).prefill.first!.tokens
        let seconds = { (k: Int) in attending.predict(decodeRows: 2, promptTokens: k, attendedPositions: 11 + 21 + StepCostModel.attended(tokens: k, from: 0)) }
        XCTAssertLessThanOrEqual(seconds(n), 0.2 + 1e-12)
        XCTAssertGreaterThan(seconds(n + 1), 0.2, "the largest chunk that fits")
    }

    func testWithoutStreamingRepliesAStepPrefillsTheWholeBudget() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let set = [running(1, tokens: 1000, computed: 0), running(2, user: 1, tokens: 1000, computed: 600)]
        XCTAssertEqual(planner.batch(running: set, pool: KVPoolState(freeBlocks: 1000, blockSize: 4), cost: cost).prefill,
                       [.init(id: 1, tokens: 112), .init(id: 2, tokens: 400)], "the fewest tokens left first: 400, then 112 of the other")
    }

    func testShortPromptsAreGrantedBeforeLongPrefills() {
        let planner = StepPlanner(capacity: 8, stepTarget: 0.2, maxPrefillTokens: 512)
        let set = [running(1, tokens: 11, computed: 10, decoding: true), running(2, user: 1, tokens: 1000, computed: 300),
                   running(3, user: 2, tokens: 40, computed: 0), running(4, user: 3, tokens: 1000, computed: 0, waited: 20)]
        // 0.2 - 30 ms = 170 tokens: request 4 has waited 20 s (1000 - 2000 < 0): first, and takes them all.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost).prefill, [.init(id: 4, tokens: 170)])
        var young = set
        young[3].waitedSeconds = 0
        // Young: 40 tokens (request 3) first, then 130 of request 2's 700.
        XCTAssertEqual(planner.batch(running: young, pool: pool, cost: cost).prefill, [.init(id: 2, tokens: 130), .init(id: 3, tokens: 40)])
    }

    func testDecodeRowsThatFillTheStepStarveNoPromptForLong() {
        let planner = StepPlanner(capacity: 64, stepTarget: 0.2, minPrefillTokens: 16)
        let set = (1...20).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) } + [running(21, tokens: 500, computed: 0)]
        // 20 + 20 x 10 ms = 0.22 s > 0.2: no prompt token fits.
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost, starvedSteps: 0).prefill, [])
        XCTAssertEqual(planner.batch(running: set, pool: pool, cost: cost, starvedSteps: SchedulerSettings.starvationSteps).prefill,
                       [.init(id: 21, tokens: 16)])
    }

    func testTokensFittingIsTheLargestThatFits() {
        let c = StepCostModel(prior: [0, 0, 0.001, 0.002])
        for start in [0, 100, 5000] {
            for seconds in [0.0, 0.0005, 0.01, 0.3] {
                let n = StepPlanner.tokensFitting(seconds, cost: c, from: start, upTo: 400)
                XCTAssertLessThanOrEqual(c.promptCost(tokens: n, from: start), seconds + 1e-15)
                if n < 400 { XCTAssertGreaterThan(c.promptCost(tokens: n + 1, from: start), seconds) }
            }
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
        let plan = planner.batch(running: [running(1, tokens: 9, computed: 8, decoding: true)],
                                 pool: KVPoolState(freeBlocks: 0, blockSize: 4), cost: cost)
        XCTAssertEqual(plan, StepPlan(failed: [1]))
    }
}

/// The step cost model recovers the costs of steps generated from known coefficients.
final class StepCostModelTests: XCTestCase {
    func testLearnsTheCoefficientsOfItsSteps() {
        let truth = [0.018, 0.0035, 0.0028, 0.0009]
        var model = StepCostModel(prior: [0.05, 0.001, 0.01, 0])
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let b = Int(rng.next() % 33), p = Int(rng.next() % 257), a = Int(rng.next() % 40_000)
            guard b + p > 0 else { continue }
            let t = truth[0] + truth[1] * Double(b) + truth[2] * Double(p) + truth[3] * Double(a) / 1024
            model.record(decodeRows: b, promptTokens: p, attendedPositions: a, seconds: t)
        }
        // The per-row weights within 3 %; the fixed part is the least determined (the prior pulls it a little).
        for i in 1..<4 {
            XCTAssertEqual(model.coefficients[i], truth[i], accuracy: truth[i] * 0.03, "coefficients \(model.coefficients), expected \(truth)")
        }
        for (b, p, a) in [(1, 0, 1_000), (32, 0, 32_000), (0, 512, 131_000), (16, 64, 20_000)] {
            let want = truth[0] + truth[1] * Double(b) + truth[2] * Double(p) + truth[3] * Double(a) / 1024
            XCTAssertEqual(model.predict(decodeRows: b, promptTokens: p, attendedPositions: a), want, accuracy: want * 0.03,
                           "a step of \(b) decode rows and \(p) prompt tokens")
        }
    }

    func testBeforeAnyStepThePriorIsTheEstimateAndBadSamplesAreIgnored() {
        var model = StepCostModel(prior: [0.02, 0.01, 0.001, 0])
        XCTAssertEqual(model.predict(decodeRows: 3, promptTokens: 10, attendedPositions: 0), 0.06, accuracy: 1e-12)
        model.record(decodeRows: 3, promptTokens: 0, attendedPositions: 0, seconds: .nan)
        model.record(decodeRows: 0, promptTokens: 0, attendedPositions: 0, seconds: 1)
        XCTAssertEqual(model.observations, 0)
        // All steps alike (8 decode rows, 0.5 s): that batch is predicted right, and no weight goes negative.
        for _ in 0..<50 { model.record(decodeRows: 8, promptTokens: 0, attendedPositions: 8_000, seconds: 0.5) }
        XCTAssertEqual(model.predict(decodeRows: 8, promptTokens: 0, attendedPositions: 8_000), 0.5, accuracy: 0.02)
        XCTAssertTrue(model.coefficients.allSatisfy { $0 >= 0 })
    }
}
