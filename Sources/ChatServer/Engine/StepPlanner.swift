// The engine's policy, as pure functions of counts: who is admitted, who decodes, who prefills how
// many prompt tokens, who is preempted. No model, no cache, no threads: the engine loop describes
// its requests and its KV pool as values, applies the plan, and runs the forward pass.
//
// A step is planned in two calls because admission attaches cached prefixes, which changes how many
// prompt tokens the admitted requests still need:
//   1. `admissions(waiting:running:pool:)`: which waiting requests join the running set;
//   2. `batch(running:pool:prefillBudget:rotation:)`: decode rows, prefill grants, preemptions.

/// One request as the planner sees it.
public struct PlannerRequest: Sendable, Equatable {
    public var id: UInt64
    public var userId: Int64
    /// Prompt + reply so far.
    public var tokens: Int
    /// Of `tokens`, the positions already in its KV sequence (0 while waiting).
    public var computed: Int
    /// KV blocks its sequence holds.
    public var blocksHeld: Int
    /// Of `blocksHeld`, those no other sequence shares: what preempting it gives back to the pool.
    public var releasableBlocks: Int
    /// Positions it asks room for: its tokens plus min(reply left, headroom), within the context.
    public var plannedLength: Int
    /// Its prompt has been processed once (it has had logits): one pending token is a decode row.
    public var promptProcessed: Bool

    public init(id: UInt64, userId: Int64, tokens: Int, computed: Int = 0, blocksHeld: Int = 0, releasableBlocks: Int? = nil,
                plannedLength: Int, promptProcessed: Bool = false) {
        self.id = id
        self.userId = userId
        self.tokens = tokens
        self.computed = computed
        self.blocksHeld = blocksHeld
        self.releasableBlocks = releasableBlocks ?? blocksHeld
        self.plannedLength = plannedLength
        self.promptProcessed = promptProcessed
    }

    /// Tokens not yet in the KV sequence.
    public var pending: Int { tokens - computed }
    /// Only the last sampled token is pending: one decode row this step.
    public var isDecoding: Bool { promptProcessed && pending == 1 }
}

/// The KV pool as the planner sees it.
public struct KVPoolState: Sendable, Equatable {
    /// Blocks a step can get (free ones plus cached prefixes evicted on demand).
    public var freeBlocks: Int
    public var blockSize: Int

    public init(freeBlocks: Int, blockSize: Int) {
        self.freeBlocks = freeBlocks
        self.blockSize = blockSize
    }

    func blocksNeeded(forLength length: Int) -> Int { (length + blockSize - 1) / blockSize }
}

/// What one step does.
public struct StepPlan: Sendable, Equatable {
    /// Requests that feed their last sampled token, in batch order.
    public var decode: [UInt64] = []
    /// Requests that feed prompt tokens (or tokens to recompute after a preemption), and how many.
    public var prefill: [Grant] = []
    /// Requests that give their blocks back and wait again (the most recently admitted first).
    public var preempted: [UInt64] = []
    /// A request alone in the engine whose growth the whole pool cannot hold: it fails.
    public var failed: [UInt64] = []

    public struct Grant: Sendable, Equatable {
        public var id: UInt64
        public var tokens: Int
        public init(id: UInt64, tokens: Int) {
            self.id = id
            self.tokens = tokens
        }
    }

    public init(decode: [UInt64] = [], prefill: [Grant] = [], preempted: [UInt64] = [], failed: [UInt64] = []) {
        self.decode = decode
        self.prefill = prefill
        self.preempted = preempted
        self.failed = failed
    }

    /// Nothing to feed the model.
    public var isEmpty: Bool { decode.isEmpty && prefill.isEmpty }
}

/// The admission and batching policy of one engine (see `SchedulerSettings` for the rules in prose).
public struct StepPlanner: Sendable, Equatable {
    public var maxRunningSequences: Int
    public var maxRunningPerUser: Int

    public init(maxRunningSequences: Int, maxRunningPerUser: Int) {
        self.maxRunningSequences = maxRunningSequences
        self.maxRunningPerUser = maxRunningPerUser
    }

    public init(settings: SchedulerSettings) {
        self.init(maxRunningSequences: settings.maxRunningSequences, maxRunningPerUser: settings.maxRunningPerUser)
    }

    /// The waiting requests (oldest first) that join this step, in order: while fewer than
    /// `maxRunningSequences` run, skipping users at their cap, as long as the free blocks cover the
    /// room the running requests still owe plus the newcomer's planned length. A request that does not
    /// fit stops admission (no overtaking, so a long prompt is not starved by short ones); an empty
    /// engine always takes the first eligible request (its prompt fits the pool: checked at submission).
    public func admissions(waiting: [PlannerRequest], running: [PlannerRequest], pool: KVPoolState) -> [UInt64] {
        var owed = 0
        var perUser: [Int64: Int] = [:]
        for r in running {
            owed += max(0, pool.blocksNeeded(forLength: r.plannedLength) - r.blocksHeld)
            perUser[r.userId, default: 0] += 1
        }
        var count = running.count
        var admitted: [UInt64] = []
        for r in waiting where count < maxRunningSequences {
            if perUser[r.userId, default: 0] >= maxRunningPerUser { continue }
            let need = max(0, pool.blocksNeeded(forLength: r.plannedLength) - r.blocksHeld)
            if count > 0 && need + owed > pool.freeBlocks { break }
            admitted.append(r.id)
            perUser[r.userId, default: 0] += 1
            owed += need
            count += 1
        }
        return admitted
    }

    /// The step over `running` (in admission order): a decode row for every request whose only
    /// pending token is its last sampled one, then `prefillBudget(decodeRows)` prompt tokens split
    /// between the users that prefill (see `splitPrefill`). When the step's growth needs more blocks
    /// than the pool has, the most recently admitted request is preempted (or, alone, fails) until it fits.
    public func batch(running: [PlannerRequest], pool: KVPoolState, prefillBudget: (_ decodeRows: Int) -> Int,
                      rotation: Int) -> StepPlan {
        var plan = StepPlan()
        var growth: [UInt64: Int] = [:]
        for r in running where r.isDecoding {
            plan.decode.append(r.id)
            growth[r.id] = 1
        }
        plan.prefill = splitPrefill(running.filter { !$0.isDecoding && $0.pending > 0 },
                                    budget: prefillBudget(plan.decode.count), rotation: rotation)
        for g in plan.prefill { growth[g.id] = g.tokens }

        func blocksToGrow(_ r: PlannerRequest) -> Int {
            guard let n = growth[r.id] else { return 0 }
            return max(0, pool.blocksNeeded(forLength: r.computed + n) - r.blocksHeld)
        }
        var needed = running.reduce(0) { $0 + blocksToGrow($1) }
        var free = pool.freeBlocks
        var remaining = running
        while !plan.isEmpty && needed > free, let victim = remaining.popLast() {
            needed -= blocksToGrow(victim)
            free += victim.releasableBlocks
            if remaining.isEmpty { plan.failed.append(victim.id) } else { plan.preempted.append(victim.id) }
            plan.decode.removeAll { $0 == victim.id }
            plan.prefill.removeAll { $0.id == victim.id }
        }
        return plan
    }

    /// `budget` prompt tokens split between users: equal shares per pass (water-filling), the pass
    /// order rotated by `rotation` users so rounding favours nobody. Within a user, the request with
    /// the fewest tokens left goes first (then the earliest admitted): a short question starts
    /// streaming at once instead of waiting behind the same user's long paste, which keeps going
    /// with the rest of the budget. Grants come back in the order of `prefilling`.
    public func splitPrefill(_ prefilling: [PlannerRequest], budget: Int, rotation: Int) -> [StepPlan.Grant] {
        guard !prefilling.isEmpty, budget > 0 else { return [] }
        var users: [Int64] = []
        var byUser: [Int64: [Int]] = [:]   // indices into `prefilling`
        for (i, r) in prefilling.enumerated() {
            if byUser[r.userId] == nil { users.append(r.userId) }
            byUser[r.userId, default: []].append(i)
        }
        for u in users {
            byUser[u]!.sort { (prefilling[$0].pending, $0) < (prefilling[$1].pending, $1) }
        }
        let shift = ((rotation % users.count) + users.count) % users.count
        users = Array(users[shift...] + users[..<shift])

        var grant = [Int](repeating: 0, count: prefilling.count)
        var remaining = budget
        var active = users
        while remaining > 0 && !active.isEmpty {
            let share = max(1, remaining / active.count)
            var stillHungry: [Int64] = []
            for u in active where remaining > 0 {
                var give = min(share, remaining)
                var hungry = false
                for i in byUser[u]! {
                    let left = prefilling[i].pending - grant[i]
                    let g = min(left, give)
                    if g > 0 {
                        grant[i] += g
                        give -= g
                        remaining -= g
                    }
                    if left - g > 0 { hungry = true }
                }
                if hungry { stillHungry.append(u) }
            }
            active = stillHungry
        }
        return prefilling.indices.compactMap { grant[$0] > 0 ? StepPlan.Grant(id: prefilling[$0].id, tokens: grant[$0]) : nil }
    }
}
