// The step planner against its pure interface: requests and the KV pool as counts, no model, no
// cache, no threads. Each expected plan is worked out by hand from the policy's rules.
import XCTest
@testable import ChatServer

final class StepPlannerTests: XCTestCase {
    /// 4-position blocks; a waiting request asks room for its tokens plus 4 reply positions.
    private let pool = KVPoolState(freeBlocks: 100, blockSize: 4)

    private func waiting(_ id: UInt64, user: Int64 = 0, tokens: Int) -> PlannerRequest {
        PlannerRequest(id: id, userId: user, tokens: tokens, plannedLength: tokens + 4)
    }

    /// A running request: `computed` positions in blocks of 4 (all its own), prompt processed when decoding.
    private func running(_ id: UInt64, user: Int64 = 0, tokens: Int, computed: Int, decoding: Bool = false) -> PlannerRequest {
        let blocks = (computed + 3) / 4
        return PlannerRequest(id: id, userId: user, tokens: tokens, computed: computed, blocksHeld: blocks,
                              plannedLength: tokens + 4, promptProcessed: decoding)
    }

    // MARK: Admission

    func testAdmissionIsInArrivalOrderUpToTheRunningCap() {
        let planner = StepPlanner(maxRunningSequences: 3, maxRunningPerUser: 3)
        let queue = (1...5).map { waiting(UInt64($0), user: Int64($0), tokens: 10) }
        XCTAssertEqual(planner.admissions(waiting: queue, running: [running(9, tokens: 5, computed: 4, decoding: true)], pool: pool),
                       [1, 2], "two free slots beside the running request, taken by the two oldest")
    }

    func testUsersAtTheirCapAreSkippedNotBlocking() {
        let planner = StepPlanner(maxRunningSequences: 4, maxRunningPerUser: 2)
        let queue = [waiting(1, user: 7, tokens: 8), waiting(2, user: 7, tokens: 8), waiting(3, user: 7, tokens: 8), waiting(4, user: 8, tokens: 8)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: [], pool: pool), [1, 2, 4],
                       "user 7 is capped at 2: its third request waits and user 8's request overtakes it")
    }

    func testARequestThatDoesNotFitStopsAdmission() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        // Running: 20 tokens, 20 computed (5 blocks), planned 24 -> owes 1 block. Free 10.
        let busy = [running(9, tokens: 20, computed: 20)]
        let small = KVPoolState(freeBlocks: 10, blockSize: 4)
        // Request 1 needs ceil(24/4) = 6 (owed 1 + 6 = 7 <= 10); request 2 needs 6 more (13 > 10):
        // it stops admission, so request 3 (needs 2) does not overtake it.
        let queue = [waiting(1, tokens: 20), waiting(2, tokens: 20), waiting(3, tokens: 4)]
        XCTAssertEqual(planner.admissions(waiting: queue, running: busy, pool: small), [1])
    }

    func testAnEmptyEngineTakesTheFirstRequestEvenIfItsHeadroomDoesNotFit() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        let tiny = KVPoolState(freeBlocks: 2, blockSize: 4)
        XCTAssertEqual(planner.admissions(waiting: [waiting(1, tokens: 7), waiting(2, tokens: 1)], running: [], pool: tiny), [1],
                       "alone it may run (its prompt fits the pool); the next one must fit beside it")
    }

    // MARK: Batching and the prefill budget

    func testDecodeRowsThenPrefillWithinTheBudget() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        let set = [running(1, tokens: 11, computed: 10, decoding: true), running(2, user: 1, tokens: 100, computed: 0),
                   running(3, tokens: 21, computed: 20, decoding: true)]
        var askedWith: Int?
        let plan = planner.batch(running: set, pool: pool, prefillBudget: { askedWith = $0; return 32 }, rotation: 0)
        XCTAssertEqual(askedWith, 2, "the budget is asked for the number of decode rows")
        XCTAssertEqual(plan, StepPlan(decode: [1, 3], prefill: [.init(id: 2, tokens: 32)]))
    }

    func testPrefillBudgetIsSplitEquallyBetweenUsersAndRotates() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        // Users 0, 1, 2 each prefill a long prompt; user 0 has two. Budget 10 over 3 users: shares of
        // 3, the leftover token to the first user in this step's rotation.
        let set = [running(1, user: 0, tokens: 50, computed: 0), running(2, user: 0, tokens: 50, computed: 0),
                   running(3, user: 1, tokens: 50, computed: 0), running(4, user: 2, tokens: 50, computed: 0)]
        func grants(_ rotation: Int) -> [UInt64: Int] {
            let plan = planner.batch(running: set, pool: pool, prefillBudget: { _ in 10 }, rotation: rotation)
            return Dictionary(uniqueKeysWithValues: plan.prefill.map { ($0.id, $0.tokens) })
        }
        // Rotation 0: order users 0,1,2 -> 3,3,3 then 1 more for user 0; user 0's first request
        // (equal pending, earliest) takes all of user 0's share.
        XCTAssertEqual(grants(0), [1: 4, 3: 3, 4: 3])
        XCTAssertEqual(grants(1), [1: 3, 3: 4, 4: 3], "the extra token goes to the next user")
        XCTAssertEqual(grants(2), [1: 3, 3: 3, 4: 4])
    }

    func testWithinAUserTheShortestPromptGoesFirst() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        let set = [running(1, tokens: 400, computed: 0), running(2, tokens: 12, computed: 0)]
        let plan = planner.batch(running: set, pool: pool, prefillBudget: { _ in 32 }, rotation: 0)
        XCTAssertEqual(plan.prefill, [.init(id: 1, tokens: 20), .init(id: 2, tokens: 12)],
                       "the short prompt is granted whole; the long paste gets the rest of the budget")
    }

    func testAUserWithLittleLeftGivesItsShareToOthers() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        let set = [running(1, user: 0, tokens: 3, computed: 0), running(2, user: 1, tokens: 100, computed: 0)]
        let plan = planner.batch(running: set, pool: pool, prefillBudget: { _ in 16 }, rotation: 0)
        XCTAssertEqual(plan.prefill, [.init(id: 1, tokens: 3), .init(id: 2, tokens: 13)], "water-filling: no token of the budget is lost")
    }

    // MARK: Preemption

    func testWhenTheStepDoesNotFitTheYoungestIsPreempted() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        // Three decoding requests at a block boundary (8 computed, 9 tokens): each needs one new block.
        let set = (1...3).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) }
        let plan = planner.batch(running: set, pool: KVPoolState(freeBlocks: 1, blockSize: 4), prefillBudget: { _ in 0 }, rotation: 0)
        // Needs 3, has 1: preempting request 3 frees its 2 blocks (1 + 2 = 3 >= 2 still needed).
        XCTAssertEqual(plan, StepPlan(decode: [1, 2], preempted: [3]))
    }

    func testSharedBlocksDoNotCountAsFreedByPreemption() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        var set = (1...3).map { running(UInt64($0), tokens: 9, computed: 8, decoding: true) }
        // Request 3's two blocks are shared with others (a common system prompt): preempting it frees none.
        set[2].releasableBlocks = 0
        let plan = planner.batch(running: set, pool: KVPoolState(freeBlocks: 1, blockSize: 4), prefillBudget: { _ in 0 }, rotation: 0)
        XCTAssertEqual(plan, StepPlan(decode: [1], preempted: [3, 2]), "3 frees nothing, so 2 goes too")
    }

    func testALoneRequestThatCannotGrowFails() {
        let planner = StepPlanner(maxRunningSequences: 8, maxRunningPerUser: 8)
        let plan = planner.batch(running: [running(1, tokens: 9, computed: 8, decoding: true)],
                                 pool: KVPoolState(freeBlocks: 0, blockSize: 4), prefillBudget: { _ in 0 }, rotation: 0)
        XCTAssertEqual(plan, StepPlan(failed: [1]))
    }
}
