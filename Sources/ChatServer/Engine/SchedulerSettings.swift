// The knobs of the engine loop and the unit of work it schedules.
import Foundation
import Transformer

/// Limits and targets of one model's engine loop. Every value is a setting of `sarvam serve`.
///
/// The engine serves to a latency objective (SLO): a short prompt's first token within
/// `timeToFirstTokenTarget`, a streaming reply's next token within `interTokenLatencyTarget`. Each
/// step is sized from the measured step costs (`StepCostModel`) to last at most `stepMargin` of the
/// inter-token target while any reply streams, and the number of running sequences follows from the
/// same costs: a request is admitted only while the decode rows of everything running would still
/// leave `prefillReserve` of the step for prompt tokens. `StepPlanner` holds the rules.
public struct SchedulerSettings: Sendable, Equatable {
    /// The most sequences decoded together; nil: as many as the measured step cost allows at the
    /// SLO (and the KV pool holds), at most `capacityCeiling`.
    public var maxRunningSequences: Int?
    /// Running sequences one user may have. Nil: while other users' requests wait, a user gets at
    /// most an equal share of the capacity; alone, all of it.
    public var maxRunningPerUser: Int?
    /// Requests that may wait for admission; more are refused at once with `ChatEngineError.busy`.
    public var queueLimit: Int
    /// Requests (running and waiting) one user may have accepted; nil: half of the capacity plus
    /// the queue, so one user's burst never takes every place and refuses everyone else.
    public var maxAcceptedPerUser: Int?
    /// Prompt tokens per step: the whole budget of a step when no reply is streaming, the ceiling
    /// otherwise. Large chunks make the matrix products efficient.
    public var prefillTokensPerStep: Int
    /// Prompt tokens a step grants when decode rows alone have filled the step target for
    /// `starvationSteps` steps in a row, so prompts always progress.
    public var minPrefillTokensPerStep: Int
    /// Seconds from submission to a short prompt's first token (the SLO); also the queue wait
    /// beyond which, sustained for `overloadSeconds`, new requests are refused.
    public var timeToFirstTokenTarget: Double
    /// Seconds between two tokens of a streaming reply (the SLO); nil: no latency target (every
    /// step prefills `prefillTokensPerStep`, capacity is `maxRunningSequences`).
    public var interTokenLatencyTarget: Double?
    /// Share of the inter-token target a step is planned to last at most (the rest absorbs
    /// noise); the engine plans less while its steps overrun their predictions (`StepMargin`).
    public var stepMargin: Double
    /// Share of a step kept for prompt tokens when deciding how many sequences may run.
    public var prefillReserve: Double
    /// How fast waiting shortens a prompt's place in line: admission and prefill go to the fewest
    /// tokens left minus `agingTokensPerSecond` × seconds waited, so a prompt of N tokens goes ahead
    /// of any prompt submitted more than N / agingTokensPerSecond seconds after it.
    public var agingTokensPerSecond: Double
    /// Seconds the predicted queue wait must stay above `timeToFirstTokenTarget` before new
    /// requests that would wait longer than it are refused (429 with the predicted wait).
    public var overloadSeconds: Double
    /// Reply tokens of KV room a request must find free to be admitted.
    public var admissionHeadroomTokens: Int
    /// The shortest `Retry-After` a refusal tells the client.
    public var retryAfterSeconds: Int
    /// Share full KV blocks between requests with a common prefix (a chat's history resent every
    /// turn, a common system prompt): a request starts after the longest cached prefix of its
    /// tokens. Blocks nobody references stay cached until the pool needs the room.
    public var prefixCaching: Bool
    /// Cached prefix bytes kept while requests run: beyond it the least recently released prefixes
    /// are dropped, so the pool's resident memory stays near what the running requests use plus
    /// this (the pool itself may be much larger: it is sized for full contexts).
    public var maxCachedPrefixBytes: Int
    /// Cached prefix bytes kept when the engine goes idle (the rest is given back to the system).
    public var idleCachedPrefixBytes: Int
    /// Speculative decoding with prompt lookup drafts (`PromptLookup`: what followed an earlier
    /// occurrence of the reply's last tokens), with or without a draft model; the step's cost
    /// model decides per step whether drafts pay.
    public var promptLookup = false

    /// The most sequences a measured capacity may come to.
    public static let capacityCeiling = 64
    /// Steps in a row without prompt progress before `minPrefillTokensPerStep` is granted anyway.
    public static let starvationSteps = 4

    public init(
        maxRunningSequences: Int? = nil, maxRunningPerUser: Int? = nil, queueLimit: Int = 64,
        maxAcceptedPerUser: Int? = nil, prefillTokensPerStep: Int = 512, minPrefillTokensPerStep: Int = 16,
        timeToFirstTokenTarget: Double = 2, interTokenLatencyTarget: Double? = 0.2,
        stepMargin: Double = 0.9, prefillReserve: Double = 0.3, agingTokensPerSecond: Double = 10,
        overloadSeconds: Double = 30, admissionHeadroomTokens: Int = 256, retryAfterSeconds: Int = 1,
        prefixCaching: Bool = true, maxCachedPrefixBytes: Int = 256 << 20, idleCachedPrefixBytes: Int = 64 << 20
    ) {
        self.maxRunningSequences = maxRunningSequences
        self.maxRunningPerUser = maxRunningPerUser
        self.queueLimit = queueLimit
        self.maxAcceptedPerUser = maxAcceptedPerUser
        self.prefillTokensPerStep = prefillTokensPerStep
        self.minPrefillTokensPerStep = min(minPrefillTokensPerStep, prefillTokensPerStep)
        self.timeToFirstTokenTarget = timeToFirstTokenTarget
        self.interTokenLatencyTarget = interTokenLatencyTarget
        self.stepMargin = stepMargin
        self.prefillReserve = prefillReserve
        self.agingTokensPerSecond = agingTokensPerSecond
        self.overloadSeconds = overloadSeconds
        self.admissionHeadroomTokens = admissionHeadroomTokens
        self.retryAfterSeconds = retryAfterSeconds
        self.prefixCaching = prefixCaching
        self.maxCachedPrefixBytes = maxCachedPrefixBytes
        self.idleCachedPrefixBytes = idleCachedPrefixBytes
    }

    /// Share of the time-to-first-token target a step of prompt tokens alone may last: a short
    /// prompt arriving during such a step waits for its end, then for its own prefill.
    public static let promptStepShare = 0.25

    /// Seconds a step of prompt tokens alone is planned to last at most (nil without a latency target).
    public var promptStepTargetSeconds: Double? { interTokenLatencyTarget.map { _ in timeToFirstTokenTarget * Self.promptStepShare } }

    /// Seconds a step is planned to last at most while a reply streams (nil without a latency target).
    public var stepTargetSeconds: Double? { interTokenLatencyTarget.map { $0 * stepMargin } }

    /// Throws when a value cannot work; the message names the setting, what was found and what is expected.
    public func validate() throws {
        func check(_ ok: Bool, _ name: String, _ value: Any, _ expected: String) throws {
            if !ok { throw ChatEngineError.invalidRequest("scheduler setting \(name): expected \(expected), found \(value)") }
        }
        func seconds(_ x: Double) -> Bool { x > 0 && x.isFinite }
        try check((maxRunningSequences ?? 1) >= 1, "maxRunningSequences", maxRunningSequences ?? 0, ">= 1")
        try check((maxRunningPerUser ?? 1) >= 1, "maxRunningPerUser", maxRunningPerUser ?? 0, ">= 1")
        try check(queueLimit >= 0, "queueLimit", queueLimit, ">= 0")
        try check((maxAcceptedPerUser ?? 1) >= 1, "maxAcceptedPerUser", maxAcceptedPerUser ?? 0, ">= 1")
        try check(prefillTokensPerStep >= 1, "prefillTokensPerStep", prefillTokensPerStep, ">= 1")
        try check(minPrefillTokensPerStep >= 1, "minPrefillTokensPerStep", minPrefillTokensPerStep, ">= 1")
        try check(seconds(timeToFirstTokenTarget), "timeToFirstTokenTarget", timeToFirstTokenTarget, "a positive number of seconds")
        try check(
            interTokenLatencyTarget.map(seconds) ?? true, "interTokenLatencyTarget", interTokenLatencyTarget ?? 0,
            "a positive number of seconds")
        try check(stepMargin > 0 && stepMargin <= 1, "stepMargin", stepMargin, "a share in (0, 1]")
        try check(prefillReserve >= 0 && prefillReserve < 1, "prefillReserve", prefillReserve, "a share in [0, 1)")
        try check(agingTokensPerSecond >= 0 && agingTokensPerSecond.isFinite, "agingTokensPerSecond", agingTokensPerSecond, ">= 0")
        try check(seconds(overloadSeconds), "overloadSeconds", overloadSeconds, "a positive number of seconds")
        try check(admissionHeadroomTokens >= 1, "admissionHeadroomTokens", admissionHeadroomTokens, ">= 1")
        try check(retryAfterSeconds >= 1, "retryAfterSeconds", retryAfterSeconds, ">= 1")
        try check(maxCachedPrefixBytes >= 0, "maxCachedPrefixBytes", maxCachedPrefixBytes, ">= 0")
        try check(idleCachedPrefixBytes >= 0, "idleCachedPrefixBytes", idleCachedPrefixBytes, ">= 0")
    }
}

/// One generation in token ids, as the scheduler runs it.
public struct SchedulerJob: Sendable {
    /// The rendered, encoded prompt (at least one token).
    public var prompt: [Int]
    /// Reply tokens at most (0: only process the prompt).
    public var maxTokens: Int
    public var sampling: Transformer::SamplingParameters
    /// Ids that end the reply (not sent to the client).
    public var stopTokenIds: Set<Int>
    public var userId: Int64
    /// The stored conversation it continues (nil outside one): its KV snapshots go with it.
    public var conversationId: String?
    public var requestId: String
    /// Called on the engine thread with every generated token (tests, tracing). Must not block.
    public var onToken: (@Sendable (Int) -> Void)?
    /// A stop token is kept as an ordinary token instead of ending the reply (vLLM's `ignore_eos`).
    public var ignoreEOS = false
    /// Stop tokens cannot be sampled until this many tokens are generated (vLLM's `min_tokens`).
    public var minTokens = 0
    /// Report each generated token's log-probability and this many alternatives; nil: none.
    public var logprobs: Int?

    public init(
        prompt: [Int], maxTokens: Int, sampling: Transformer::SamplingParameters = .greedy,
        stopTokenIds: Set<Int> = [], userId: Int64 = 0, conversationId: String? = nil, requestId: String = "",
        onToken: (@Sendable (Int) -> Void)? = nil
    ) {
        self.conversationId = conversationId
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.userId = userId
        self.requestId = requestId
        self.onToken = onToken
    }
}

/// What one `EngineLoop.step()` did (for tests and the debug log).
public struct StepReport: Sendable, Equatable {
    /// Request ids that got one decode token, in batch order.
    public var decoded: [String] = []
    /// Request ids and the prompt tokens each processed, in batch order.
    public var prefilled: [Prefill] = []
    /// Requests preempted for lack of KV blocks this step.
    public var preempted: [String] = []
    /// Requests admitted this step, in order.
    public var admitted: [String] = []
    /// Admitted requests that start after a cached prefix, and its length in tokens.
    public var reusedPrefix: [Prefill] = []
    /// Speculative decoding this step: draft tokens proposed and kept by the target, over all requests.
    public var draftedTokens = 0
    public var acceptedTokens = 0

    public struct Prefill: Sendable, Equatable {
        public var requestId: String
        public var tokens: Int
        public init(requestId: String, tokens: Int) {
            self.requestId = requestId
            self.tokens = tokens
        }
    }

    public init() {}

    public var didWork: Bool { !decoded.isEmpty || !prefilled.isEmpty || !admitted.isEmpty || !preempted.isEmpty }
}
