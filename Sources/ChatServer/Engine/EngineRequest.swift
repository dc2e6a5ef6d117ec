// One request inside an engine loop, from submission to its end.
import Tokenizer
import Transformer

/// Its life: tokens = prompt + reply so far. Tokens not yet in its KV sequence are "pending": many
/// while prefilling (or after a preemption), exactly one while decoding (the last sampled token). A
/// step feeds some pending tokens; when it feeds the last one the model returns logits and the
/// output processor samples the next token. So prefill, decode and recompute after preemption are
/// one mechanism. Engine thread only (except `id` and the continuation).
final class EngineRequest {
    let id: UInt64
    let job: SchedulerJob
    let continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
    var sampler: Sampler
    var decoder: StreamingDecoder
    /// prompt + reply so far.
    var tokens: [Int]
    var generatedCount = 0
    /// Nil until admitted (and after the end).
    var sequence: KVSequence!
    /// With speculative decoding: the sampling of speculative rounds, which observes the same
    /// committed tokens as `sampler` (nil until it first speculates), and the draft model's sequence
    /// (`SpeculativeDraft`; nil until it drafts, and after a preemption or the end).
    var speculative: SpeculativeSampler?
    var draftSequence: KVSequence?
    /// The draft model's acceptance rate for it, and prompt lookup's by match length (index:
    /// length − minimumMatch), each averaged over its own verifications.
    var draftLength: DraftLength?
    var lookupLengths: [DraftLength] = []
    var promptReported = false
    /// Prompt tokens attached from the prefix cache at first admission (usage reports them).
    var cachedPromptTokens = 0
    /// Tokens sampled since the last text event (a token may end inside a UTF-8 character).
    var unreportedTokens = 0
    var ended = false
    /// Its KV snapshot is being read from disk: not admitted until it arrives (see KVSnapshotter).
    var loadingSnapshot = false
    /// Blocks read from its snapshot, put after the cached prefix at admission.
    var loadedSnapshot: LoadedSnapshot?
    let submittedAt: Double
    var admittedAt: Double?
    var firstTokenAt: Double?
    var lastTokenAt: Double?

    init(
        id: UInt64, job: SchedulerJob, continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation,
        decoder: StreamingDecoder, submittedAt: Double
    ) {
        self.id = id
        self.job = job
        self.continuation = continuation
        self.decoder = decoder
        self.submittedAt = submittedAt
        tokens = job.prompt
        sampler = Sampler(parameters: job.sampling)
        sampler.observe(job.prompt)
    }

    /// Scratch copy of a logit row with the stop tokens masked (only while below `minTokens`).
    private var masked: [Float] = []

    /// Samples from `row` with every stop token's logit at −∞ (before `minTokens` are generated).
    func sampleWithoutStopTokens(_ row: UnsafeBufferPointer<Float>) -> Int {
        if job.stopTokenIds.isEmpty { return sampler.sample(row) }
        if masked.count != row.count { masked = Array(repeating: 0, count: row.count) }
        masked.withUnsafeMutableBufferPointer { m in
            _ = m.initialize(from: row)
            for id in job.stopTokenIds where id >= 0 && id < m.count { m[id] = -.infinity }
        }
        return sampler.sample(masked)
    }

    /// Whose KV snapshots it may load and whose its own are.
    var snapshotOwner: KVSnapshotOwner { KVSnapshotOwner(user: job.userId, conversation: job.conversationId ?? "") }

    /// Tokens not yet in the KV sequence.
    var pendingCount: Int { tokens.count - (sequence?.length ?? 0) }

    /// What the step planner sees. `plannedLength`: tokens plus min(reply left, `headroom`), within `contextLength`.
    func plannerView(cache: KVCache, headroom: Int, now: Double) -> PlannerRequest {
        let replyLeft = max(0, job.maxTokens - generatedCount)
        return PlannerRequest(
            id: id, userId: job.userId, tokens: tokens.count, computed: sequence?.length ?? 0,
            blocksHeld: sequence?.blockCount ?? 0, releasableBlocks: sequence.map(cache.releasableBlockCount) ?? 0,
            plannedLength: min(tokens.count + min(replyLeft, headroom), cache.contextLength),
            promptProcessed: promptReported, waitedSeconds: now - submittedAt)
    }
}
