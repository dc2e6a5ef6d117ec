// The knobs of the engine loop and the unit of work it schedules.
import Foundation
import Transformer

/// Limits of one model's engine loop. Every value is a setting of `sarvam serve`.
///
/// Admission policy (documented in the README): a waiting request is admitted, oldest first, when
/// (1) fewer than `maxRunningSequences` run, (2) its user runs fewer than `maxRunningPerUser`
/// (requests of capped users are skipped, not blocking others), and (3) the free KV blocks, minus the
/// blocks the running requests still need to reach their own `prompt + min(reply left,
/// admissionHeadroomTokens)` positions, cover its `prompt + min(maxTokens, admissionHeadroomTokens)`
/// positions. A request that does not fit stops admission (no overtaking, so a long prompt is not
/// starved by short ones). Replies may still outgrow the headroom; when a step then finds the pool
/// short, the most recently admitted request is preempted: its blocks are released and it goes back
/// to the head of the queue, to be recomputed (prompt + reply so far, same sampler state, so the
/// same tokens) when room returns. Its client sees a pause, never an error.
public struct SchedulerSettings: Sendable, Equatable {
    /// Sequences decoded together (the batch size of a decode step).
    public var maxRunningSequences: Int
    /// Running sequences one user may have; the rest of that user's requests wait.
    public var maxRunningPerUser: Int
    /// Requests that may wait for admission; more are refused at once with `ChatEngineError.busy`.
    public var queueLimit: Int
    /// Prompt tokens processed per step over all prefilling requests, shared round-robin between
    /// users: the whole budget of a step when no reply is streaming, the ceiling of the adaptive
    /// budget otherwise (see `PrefillBudget`). Large chunks make the matrix products efficient.
    public var prefillTokensPerStep: Int
    /// When set, a step that decodes for streaming replies prefills only as many prompt tokens as
    /// fit beside its decode rows in about this many seconds (costs measured from the engine's own
    /// steps): the silence a streaming reply sees while a long prompt is admitted stays near it on
    /// any machine and load. Nil: always `prefillTokensPerStep`.
    public var targetStepSeconds: Double?
    /// The smallest adaptive budget (progress for prompts even when decode alone fills the target).
    public var minPrefillTokensPerStep: Int
    /// Reply tokens of KV room a request must find free to be admitted (see the policy above).
    public var admissionHeadroomTokens: Int
    /// What `busy` tells the client to wait.
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

    public init(maxRunningSequences: Int = 8, maxRunningPerUser: Int? = nil, queueLimit: Int = 16,
                prefillTokensPerStep: Int = 512, targetStepSeconds: Double? = 0.8, minPrefillTokensPerStep: Int = 32,
                admissionHeadroomTokens: Int = 256, retryAfterSeconds: Int = 2,
                prefixCaching: Bool = true, maxCachedPrefixBytes: Int = 256 << 20, idleCachedPrefixBytes: Int = 64 << 20) {
        self.maxRunningSequences = maxRunningSequences
        self.maxRunningPerUser = maxRunningPerUser ?? maxRunningSequences
        self.queueLimit = queueLimit
        self.prefillTokensPerStep = prefillTokensPerStep
        self.targetStepSeconds = targetStepSeconds
        self.minPrefillTokensPerStep = min(minPrefillTokensPerStep, prefillTokensPerStep)
        self.admissionHeadroomTokens = admissionHeadroomTokens
        self.retryAfterSeconds = retryAfterSeconds
        self.prefixCaching = prefixCaching
        self.maxCachedPrefixBytes = maxCachedPrefixBytes
        self.idleCachedPrefixBytes = idleCachedPrefixBytes
    }

    /// Throws when a value cannot work; the message names the setting, what was found and what is expected.
    public func validate() throws {
        func check(_ ok: Bool, _ name: String, _ value: Int, _ expected: String) throws {
            if !ok { throw ChatEngineError.invalidRequest("scheduler setting \(name): expected \(expected), found \(value)") }
        }
        try check(maxRunningSequences >= 1, "maxRunningSequences", maxRunningSequences, ">= 1")
        try check(maxRunningPerUser >= 1, "maxRunningPerUser", maxRunningPerUser, ">= 1")
        try check(queueLimit >= 0, "queueLimit", queueLimit, ">= 0")
        try check(prefillTokensPerStep >= 1, "prefillTokensPerStep", prefillTokensPerStep, ">= 1")
        try check(minPrefillTokensPerStep >= 1, "minPrefillTokensPerStep", minPrefillTokensPerStep, ">= 1")
        if let t = targetStepSeconds, !(t > 0 && t.isFinite) {
            throw ChatEngineError.invalidRequest("scheduler setting targetStepSeconds: expected a positive number of seconds, found \(t)")
        }
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
    public var requestId: String
    /// Called on the engine thread with every generated token (tests, tracing). Must not block.
    public var onToken: (@Sendable (Int) -> Void)?

    public init(prompt: [Int], maxTokens: Int, sampling: Transformer::SamplingParameters = .greedy,
                stopTokenIds: Set<Int> = [], userId: Int64 = 0, requestId: String = "",
                onToken: (@Sendable (Int) -> Void)? = nil) {
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
