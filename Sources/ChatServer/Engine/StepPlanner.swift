// The engine's policy, as pure functions of counts: who is admitted, who decodes, who prefills how
// many prompt tokens, who is preempted. No model, no cache, no threads, no clock: the engine loop
// describes its requests, its KV pool and its measured step costs as values, applies the plan, and
// runs the forward pass.
//
// A step is planned in two calls because admission attaches cached prefixes, which changes how many
// prompt tokens the admitted requests still need:
//   1. `admissions(waiting:running:pool:cost:)`: which waiting requests join the running set;
//   2. `batch(running:pool:cost:starvedSteps:)`: decode rows, prefill grants, preemptions.
//
// Order: requests go by their prompt tokens left minus `agingTokensPerSecond` × seconds waited
// (shortest remaining prefill first, with aging), so a short question overtakes long pastes, and a
// paste of N tokens is overtaken only by prompts submitted less than N / agingTokensPerSecond
// seconds after it.

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
    /// Seconds since submission.
    public var waitedSeconds: Double

    public init(
        id: UInt64, userId: Int64, tokens: Int, computed: Int = 0, blocksHeld: Int = 0, releasableBlocks: Int? = nil,
        plannedLength: Int, promptProcessed: Bool = false, waitedSeconds: Double = 0
    ) {
        self.id = id
        self.userId = userId
        self.tokens = tokens
        self.computed = computed
        self.blocksHeld = blocksHeld
        self.releasableBlocks = releasableBlocks ?? blocksHeld
        self.plannedLength = plannedLength
        self.promptProcessed = promptProcessed
        self.waitedSeconds = waitedSeconds
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

/// Who joins a step (`StepPlanner.admissions`).
public struct Admission: Sendable, Equatable {
    /// Waiting requests that join, in line order.
    public var admitted: [UInt64] = []
    /// Running requests that have not produced a token yet and wait again to make room for them.
    public var displaced: [UInt64] = []

    public init(admitted: [UInt64] = [], displaced: [UInt64] = []) {
        self.admitted = admitted
        self.displaced = displaced
    }
}

/// The admission and batching policy of one engine (see `SchedulerSettings` for the settings).
public struct StepPlanner: Sendable, Equatable {
    /// The most sequences that run at once.
    public var capacity: Int
    /// A hard per-user cap; nil: an equal share of `capacity` while other users wait.
    public var maxRunningPerUser: Int?
    /// Seconds a step may last while a reply streams; nil: no latency target.
    public var stepTarget: Double?
    /// Seconds a step of prompt tokens alone may last (nil: `maxPrefillTokens` whatever they
    /// cost): a short prompt that arrives meanwhile waits for that step to end.
    public var promptStepTarget: Double?
    /// Share of `stepTarget` that admission keeps free of decode rows, for prompt tokens.
    public var prefillReserve: Double
    /// Prompt tokens per step at most (all of them when no reply streams).
    public var maxPrefillTokens: Int
    /// Prompt tokens granted anyway after `SchedulerSettings.starvationSteps` steps without any.
    public var minPrefillTokens: Int
    public var agingTokensPerSecond: Double

    public init(
        capacity: Int, maxRunningPerUser: Int? = nil, stepTarget: Double? = nil, promptStepTarget: Double? = nil,
        prefillReserve: Double = 0.3, maxPrefillTokens: Int = 512, minPrefillTokens: Int = 16, agingTokensPerSecond: Double = 10
    ) {
        self.capacity = capacity
        self.maxRunningPerUser = maxRunningPerUser
        self.stepTarget = stepTarget
        self.promptStepTarget = promptStepTarget
        self.prefillReserve = prefillReserve
        self.maxPrefillTokens = maxPrefillTokens
        self.minPrefillTokens = minPrefillTokens
        self.agingTokensPerSecond = agingTokensPerSecond
    }

    public init(settings: SchedulerSettings, capacity: Int) {
        self.init(
            capacity: capacity, maxRunningPerUser: settings.maxRunningPerUser, stepTarget: settings.stepTargetSeconds,
            promptStepTarget: settings.promptStepTargetSeconds, prefillReserve: settings.prefillReserve,
            maxPrefillTokens: settings.prefillTokensPerStep,
            minPrefillTokens: settings.minPrefillTokensPerStep, agingTokensPerSecond: settings.agingTokensPerSecond)
    }

    /// A request's place in line: lower goes first.
    public func priority(_ r: PlannerRequest) -> Double {
        Double(r.pending) - r.waitedSeconds * agingTokensPerSecond
    }

    private func inLine(_ requests: [PlannerRequest]) -> [PlannerRequest] {
        requests.map { (priority($0), $0) }.sorted { ($0.0, $0.1.id) < ($1.0, $1.1.id) }.map(\.1)
    }

    /// Seconds of decode-only time admission allows (nil: no latency target).
    private var decodeBudget: Double? { stepTarget.map { $0 * (1 - prefillReserve) } }

    /// The most decode rows of `contextPerRow` positions each that fit the decode budget, within
    /// 1...`ceiling` (the engine's capacity when no maximum is set).
    public static func decodeCapacity(
        cost: StepCostModel, stepTarget: Double, prefillReserve: Double,
        contextPerRow: Int, ceiling: Int
    ) -> Int {
        let budget = stepTarget * (1 - prefillReserve)
        var rows = 1
        while rows < ceiling && cost.predict(rows: rows + 1, attendedPositions: (rows + 1) * contextPerRow) <= budget {
            rows += 1
        }
        return rows
    }

    /// Who joins this step: the waiting requests admitted, in line order (see the file header), and
    /// the running ones they displace. A request is admitted while fewer than `capacity` run and:
    /// - its user is under its cap (`maxRunningPerUser`, or else an equal share of `capacity` when
    ///   another user's request waits): a capped user's request is skipped, not blocking others;
    /// - the free KV blocks cover what the running requests still owe to reach their planned
    ///   length plus the newcomer's planned length;
    /// - with a latency target, decode rows for everything running plus the newcomer, at their
    ///   planned lengths, still fit the decode budget.
    /// When the capacity or the decode budget is what stops it, a running request that has not
    /// produced a token yet (nobody watches it stream) and comes later in line is displaced: it
    /// waits again, its computed blocks kept in the prefix cache. So a short question does not wait
    /// behind long pastes that merely occupy the slots. Otherwise, and when the KV pool is short,
    /// admission stops (nobody overtakes for room alone). An empty engine always takes the first
    /// eligible request (its prompt fits the pool: checked at submission).
    public func admissions(
        waiting: [PlannerRequest], running: [PlannerRequest], pool: KVPoolState,
        cost: StepCostModel
    ) -> Admission {
        var owed = 0
        var attended = 0
        var free = pool.freeBlocks
        var perUser: [Int64: Int] = [:]
        func owes(_ r: PlannerRequest) -> Int { max(0, pool.blocksNeeded(forLength: r.plannedLength) - r.blocksHeld) }
        for r in running {
            owed += owes(r)
            attended += r.plannedLength
            perUser[r.userId, default: 0] += 1
        }
        var waitingUsers: [Int64: Int] = [:]
        for r in waiting { waitingUsers[r.userId, default: 0] += 1 }
        let users = Set(perUser.keys).union(waitingUsers.keys).count
        let share = max(1, capacity / max(1, users))
        var count = running.count
        // Running requests that may give way, the last in line first.
        var displaceable = inLine(running.filter { !$0.promptProcessed })
        var result = Admission()
        for r in inLine(waiting) {
            let mine = perUser[r.userId, default: 0]
            if let cap = maxRunningPerUser {
                if mine >= cap { continue }
            } else if mine >= share && waitingUsers.contains(where: { $0.key != r.userId && $0.value > 0 }) {
                continue
            }
            let need = max(0, pool.blocksNeeded(forLength: r.plannedLength) - r.blocksHeld)
            func overBudget() -> Bool {
                guard count > 0, let budget = decodeBudget else { return false }
                return cost.predict(rows: count + 1, attendedPositions: attended + r.plannedLength) > budget
            }
            while count >= capacity || overBudget(), let victim = displaceable.last, priority(victim) > priority(r) {
                displaceable.removeLast()
                result.displaced.append(victim.id)
                count -= 1
                perUser[victim.userId, default: 1] -= 1
                owed -= owes(victim)
                attended -= victim.plannedLength
                free += victim.releasableBlocks
            }
            if count >= capacity || overBudget() { break }
            if count > 0 && need + owed > free { break }
            result.admitted.append(r.id)
            perUser[r.userId, default: 0] += 1
            waitingUsers[r.userId, default: 1] -= 1
            owed += need
            attended += r.plannedLength
            count += 1
        }
        return result
    }

    /// The step over `running` (in admission order): a decode row for every request whose only
    /// pending token is its last sampled one, then prompt tokens in line order. With no decode row
    /// the step takes `maxPrefillTokens` (within `promptStepTarget`); beside decode rows it takes what the cost model says fits
    /// the step target (at most `maxPrefillTokens`), and `minPrefillTokens` after `starvedSteps`
    /// steps that gave none. When the step's growth needs more KV blocks than the pool has, the
    /// most recently admitted request is preempted (or, alone, fails) until it fits.
    public func batch(running: [PlannerRequest], pool: KVPoolState, cost: StepCostModel, starvedSteps: Int = 0) -> StepPlan {
        var plan = StepPlan()
        var attended = 0
        for r in running where r.isDecoding {
            plan.decode.append(r.id)
            attended += r.computed + 1
        }
        let prefilling = running.filter { !$0.isDecoding && $0.pending > 0 }
        var grants: [UInt64: Int] = [:]
        var tokensLeft = maxPrefillTokens
        if plan.decode.isEmpty || stepTarget == nil {
            // Prompt tokens alone: the whole budget, within `promptStepTarget` when set (at least
            // `minPrefillTokens`, so a slow box still progresses).
            var rows = 0
            var logitRows = 0
            for r in inLine(prefilling) where tokensLeft > 0 {
                var n = min(r.pending, tokensLeft)
                if let limit = promptStepTarget, plan.decode.isEmpty {
                    n = Self.tokensFitting(upTo: n) { n in
                        cost.predict(
                            rows: rows + n, logitRows: logitRows + (n == r.pending ? 1 : 0),
                            attendedPositions: attended + StepCostModel.attended(tokens: n, from: r.computed)) <= limit
                    }
                    if n == 0 && grants.isEmpty { n = min(r.pending, minPrefillTokens) }
                    if n == 0 { break }
                }
                grants[r.id] = n
                tokensLeft -= n
                rows += n
                if n == r.pending { logitRows += 1 }
                attended += StepCostModel.attended(tokens: n, from: r.computed)
            }
        } else {
            var rows = plan.decode.count
            var logitRows = rows
            for r in inLine(prefilling) where tokensLeft > 0 {
                // A grant that ends the prompt produces logits (the reply's first token).
                let n = Self.tokensFitting(upTo: min(r.pending, tokensLeft)) { n in
                    cost.predict(
                        rows: rows + n, logitRows: logitRows + (n == r.pending ? 1 : 0),
                        attendedPositions: attended + StepCostModel.attended(tokens: n, from: r.computed)) <= stepTarget!
                }
                if n == 0 { break }
                grants[r.id] = n
                tokensLeft -= n
                rows += n
                if n == r.pending { logitRows += 1 }
                attended += StepCostModel.attended(tokens: n, from: r.computed)
            }
            if grants.isEmpty && starvedSteps >= SchedulerSettings.starvationSteps, let first = inLine(prefilling).first {
                grants[first.id] = min(first.pending, minPrefillTokens)
            }
        }
        plan.prefill = prefilling.compactMap { r in grants[r.id].map { StepPlan.Grant(id: r.id, tokens: $0) } }

        var growth: [UInt64: Int] = grants
        for id in plan.decode { growth[id] = 1 }
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

    /// The most tokens, up to `limit`, for which `fits` holds (`fits` holds for fewer whenever it
    /// holds for more: a step's cost grows with its rows).
    static func tokensFitting(upTo limit: Int, _ fits: (Int) -> Bool) -> Int {
        guard limit > 0, fits(1) else { return 0 }
        if fits(limit) { return limit }
        var low = 1, high = limit  // fits(low), !fits(high)
        while high - low > 1 {
            let mid = (low + high) / 2
            if fits(mid) { low = mid } else { high = mid }
        }
        return low
    }
}
