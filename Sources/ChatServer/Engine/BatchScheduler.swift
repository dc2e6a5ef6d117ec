// The engine loop of one model: continuous batching (issue 7).
//
// Each step is ONE Model.forward over: one decode token for every running reply + a bounded budget
// of prompt tokens (chunked prefill) shared round-robin between users. Requests join (admission)
// and leave (stop token, max tokens, context full, cancellation, failure) between steps.
//
// Threads: `submit` and stream cancellation may come from any thread; they only touch the inbox
// under `condition`. Everything else (model, cache, running/waiting lists, samplers, decoders)
// belongs to the engine thread, which calls `step()` in a loop (tests call `step()` themselves and
// never start the thread).
//
// One request's life: tokens = prompt + reply so far. Tokens not yet in its KV sequence are
// "pending": many while prefilling (or after a preemption), exactly one while decoding (the last
// sampled token). A step feeds some pending tokens; when it feeds the last one it asks for logits
// and samples the next token. So prefill, decode and recompute after preemption are one mechanism.
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Tokenizer
import Transformer

public final class BatchScheduler: @unchecked Sendable {
    public let model: Model
    /// The KV pool; its unused pages go back to the system whenever the engine goes idle (see
    /// `releaseIdleCacheMemory`). Engine thread only; other threads use the constants below.
    public let cache: KVCache
    /// Tokens per sequence (the cache's context length).
    public let contextLength: Int
    private let blockSize: Int
    private let blockCount: Int
    public let settings: SchedulerSettings
    public let modelId: String
    private let tokenizer: Tokenizer
    private let metrics: EngineMetrics
    private let logger: Logger
    /// Seconds on a monotonic clock (injected: tests use a manual clock).
    private let now: @Sendable () -> Double

    // Shared state, under `condition`.
    private let condition = NSCondition()
    private var inbox: [ScheduledRequest] = []
    private var cancelledIds: Set<UInt64> = []
    /// Accepted and not yet ended (inbox + waiting + running): what the queue limit bounds.
    private var acceptedCount = 0
    private var nextId: UInt64 = 0
    private var stopping = false
    private var threadRunning = false

    // Engine-thread state.
    private var waiting: [ScheduledRequest] = []
    /// In admission order (the last one is the first to be preempted).
    private var running: [ScheduledRequest] = []
    private var stepIndex = 0
    /// A forward step wrote into the pool since its unused memory was last released.
    private var cacheTouched = false
    /// The prompt tokens a step may prefill, learned from the steps' durations (see `PrefillBudget`).
    private(set) var budget: PrefillBudget
    public private(set) var lastStep = StepReport()

    public init(model: Model, cache: KVCache, tokenizer: Tokenizer, settings: SchedulerSettings,
                modelId: String, logger: Logger = Logger(label: "sarvam.engine"),
                now: @escaping @Sendable () -> Double = BatchScheduler.monotonicSeconds) throws {
        try settings.validate()
        self.model = model
        self.cache = cache
        contextLength = cache.contextLength
        blockSize = cache.blockSize
        blockCount = cache.blockCount
        budget = PrefillBudget(settings: settings)
        self.tokenizer = tokenizer
        self.settings = settings
        self.modelId = modelId
        self.logger = logger
        self.now = now
        metrics = EngineMetrics(model: modelId)
        metrics.kvBlocksTotal.record(cache.blockCount)
        metrics.kvBlocksUsed.record(cache.usedBlockCount)
        metrics.kvBlocksCached.record(cache.cachedBlockCount)
        metrics.running.record(0)
        metrics.waiting.record(0)
    }

    public static let monotonicSeconds: @Sendable () -> Double = {
        Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
    }

    // MARK: - Submission (any thread)

    /// Queues `job`; its events arrive on the returned stream. Refusals (queue full, prompt too long,
    /// shutting down) are thrown here, before anything is queued.
    public func trySubmit(_ job: SchedulerJob) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        guard !job.prompt.isEmpty else { throw ChatEngineError.invalidRequest("the prompt is empty: expected at least one token") }
        guard job.maxTokens >= 0 else { throw ChatEngineError.invalidRequest("max_tokens must be >= 0, found \(job.maxTokens)") }
        if job.prompt.count >= contextLength {
            throw ChatEngineError.contextLengthExceeded(promptTokens: job.prompt.count, limit: contextLength)
        }
        let blocks = (job.prompt.count + blockSize) / blockSize
        if blocks > blockCount {
            throw ChatEngineError.failed(
                "the prompt needs \(blocks) KV cache blocks but the whole cache has \(blockCount); raise the KV cache budget")
        }
        do { try job.sampling.validate() } catch { throw ChatEngineError.invalidRequest("\(error)") }

        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        condition.lock()
        defer { condition.unlock() }
        if stopping { throw ChatEngineError.failed("the engine is shutting down") }
        if acceptedCount >= settings.maxRunningSequences + settings.queueLimit {
            metrics.count(outcome: "rejected")
            throw ChatEngineError.busy(retryAfterSeconds: settings.retryAfterSeconds)
        }
        nextId += 1
        let request = ScheduledRequest(id: nextId, job: job, continuation: continuation,
                                       decoder: tokenizer.makeStreamingDecoder(skipSpecial: true), submittedAt: now())
        let id = nextId
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id: id) }
        }
        inbox.append(request)
        acceptedCount += 1
        condition.signal()
        return stream
    }

    /// `trySubmit`, with refusals delivered as the stream's error.
    public func submit(_ job: SchedulerJob) -> AsyncThrowingStream<GenerationEvent, Error> {
        do {
            return try trySubmit(job)
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    /// The consumer went away: the request ends at the start of the next step.
    private func cancel(id: UInt64) {
        condition.lock()
        cancelledIds.insert(id)
        condition.signal()
        condition.unlock()
    }

    /// Requests accepted and not yet ended (running + waiting).
    public var activeRequestCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return acceptedCount
    }

    // MARK: - Engine thread

    /// Runs the largest step the loop will run, through throwaway sequences: a full prefill chunk
    /// beside `maxRunningSequences - 1` decode rows. The model's scratch grows to its working size
    /// now, so the memory `/health` turns ready at is the memory the server returns to after a
    /// burst, and the first real step pays no page faults. Call before `start()`.
    public func warmUp() throws {
        let decodeRows = max(0, min(settings.maxRunningSequences - 1, blockCount - 1))
        let chunk = max(1, min(settings.prefillTokensPerStep, contextLength, (blockCount - decodeRows) * blockSize))
        let sequences = (0...decodeRows).map { _ in cache.makeSequence() }
        defer { sequences.forEach(cache.release) }
        let token = min(tokenizer.bosTokenId ?? 0, model.configuration.vocabSize - 1)
        let inputs = sequences.enumerated().map { i, s in SequenceInput(sequence: s, tokens: Array(repeating: token, count: i == 0 ? chunk : 1)) }
        _ = try model.forward(inputs)
        cacheTouched = true
    }

    /// Starts the engine thread (a plain Thread: each step blocks for tens of milliseconds).
    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !threadRunning else { return }
        threadRunning = true
        let thread = Thread { [self] in runLoop() }
        thread.name = "sarvam-engine-\(modelId)"
        thread.stackSize = 1 << 22
        thread.start()
    }

    /// Stops the loop after the current step; requests still queued or running fail with "shutting down".
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        let started = threadRunning
        condition.unlock()
        if !started { failEverything(ChatEngineError.failed("the engine is shutting down")) }
    }

    private func runLoop() {
        while true {
            if running.isEmpty && waiting.isEmpty { releaseIdleCacheMemory() }
            condition.lock()
            while !stopping && inbox.isEmpty && cancelledIds.isEmpty && running.isEmpty && waiting.isEmpty {
                condition.wait()
            }
            let stop = stopping
            condition.unlock()
            if stop { break }
            let report = step()
            if !report.didWork {
                // Waiting requests that cannot be admitted yet and nothing running: wait for news.
                condition.lock()
                if inbox.isEmpty && cancelledIds.isEmpty && !stopping {
                    _ = condition.wait(until: Date(timeIntervalSinceNow: 0.05))
                }
                condition.unlock()
            }
        }
        failEverything(ChatEngineError.failed("the engine is shutting down"))
    }

    /// After a burst: the pool keeps the most recently used cached prefixes (up to
    /// `idleCachedPrefixBytes`) and gives the pages of every other block back to the system, so the
    /// server's memory returns to its idle level (plus those prefixes). Then the C allocator gives
    /// back the free memory it keeps (its heaps grow with the bursts' short-lived buffers: HTTP,
    /// JSON, per-request arrays, and do not shrink on their own).
    private func releaseIdleCacheMemory() {
        guard cacheTouched, cache.usedBlockCount == 0 else { return }
        cache.releaseUnusedMemory(keepingCachedBlocks: cachedBlocks(bytes: settings.idleCachedPrefixBytes))
        cacheTouched = false
        updateGauges()
        _ = Self.mallocTrim?(0)
    }

    /// Whole blocks in `bytes` of cached prefixes (0 without prefix caching).
    private func cachedBlocks(bytes: Int) -> Int {
        settings.prefixCaching ? bytes / cache.blockBytes : 0
    }

    /// glibc's `malloc_trim` (not in Swift's Glibc module), looked up once; nil elsewhere.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()

    private func failEverything(_ error: ChatEngineError) {
        condition.lock()
        let pending = inbox
        inbox.removeAll()
        condition.unlock()
        for r in pending + waiting + running { end(r, outcome: "failed") { $0.finish(throwing: error) } }
        waiting.removeAll()
        running.removeAll()
        updateGauges()
    }

    // MARK: - One step

    /// Intake, cancellation, admission, one batched forward, sampling and streaming. Engine thread only.
    @discardableResult
    public func step() -> StepReport {
        let stepStart = now()
        stepIndex += 1
        var report = StepReport()

        condition.lock()
        let arrivals = inbox
        inbox.removeAll()
        let cancels = cancelledIds
        cancelledIds.removeAll()
        condition.unlock()
        waiting.append(contentsOf: arrivals)
        if !cancels.isEmpty { removeCancelled(cancels) }

        admit(&report)

        // Decode entries: every running request whose only pending token is its last sampled one.
        var plan: [(request: ScheduledRequest, count: Int)] = []
        for r in running where r.isDecoding {
            plan.append((r, 1))
            report.decoded.append(r.job.requestId)
        }
        let decoding = plan.count
        for (r, n) in allocatePrefill(budget: budget.tokens(decoding: decoding)) {
            plan.append((r, n))
            report.prefilled.append(.init(requestId: r.job.requestId, tokens: n))
        }

        // Make room: the entries' growth must fit the free blocks; otherwise preempt the youngest.
        while !plan.isEmpty {
            var needed = 0
            for (r, n) in plan { needed += max(0, cache.blocksNeeded(forLength: r.sequence.length + n) - r.sequence.blockCount) }
            if needed <= cache.freeBlockCount { break }
            guard let victim = running.last else { break }
            if running.count == 1 {
                fail(victim, ChatEngineError.failed(
                    "the reply needs more KV cache than the whole pool holds (\(cache.blockCount) blocks); raise the KV cache budget"))
            } else {
                preempt(victim)
                report.preempted.append(victim.job.requestId)
            }
            plan.removeAll { $0.request === victim }
            report.decoded.removeAll { $0 == victim.job.requestId }
            report.prefilled.removeAll { $0.requestId == victim.job.requestId }
        }

        if !plan.isEmpty {
            cacheTouched = true
            run(plan)
            cache.evictCachedBlocks(keeping: cachedBlocks(bytes: settings.maxCachedPrefixBytes))
            let duration = now() - stepStart
            EngineMetrics.record(metrics.stepDuration, seconds: duration)
            budget.record(decoding: report.decoded.count, prefilled: report.prefilled.reduce(0) { $0 + $1.tokens }, seconds: duration)
        }
        updateGauges()
        lastStep = report
        return report
    }

    /// Admits waiting requests, oldest first, under the caps and the KV policy of `SchedulerSettings`.
    private func admit(_ report: inout StepReport) {
        guard !waiting.isEmpty else { return }
        var owed = 0
        for r in running { owed += max(0, cache.blocksNeeded(forLength: plannedLength(r)) - r.sequence.blockCount) }
        var perUser: [Int64: Int] = [:]
        for r in running { perUser[r.job.userId, default: 0] += 1 }
        var i = 0
        while i < waiting.count && running.count < settings.maxRunningSequences {
            let r = waiting[i]
            if perUser[r.job.userId, default: 0] >= settings.maxRunningPerUser { i += 1; continue }
            let need = cache.blocksNeeded(forLength: plannedLength(r))
            // An empty engine always takes the head (its prompt + 1 fits the pool: checked at submission).
            if !running.isEmpty && need + owed > cache.freeBlockCount { break }
            waiting.remove(at: i)
            if r.sequence == nil { r.sequence = cache.makeSequence() }
            // New, or preempted (its own blocks may still be cached): start after the cached prefix.
            if settings.prefixCaching && r.sequence.length == 0 {
                let reused = cache.attachCachedPrefix(r.sequence, tokens: r.tokens)
                if r.admittedAt == nil { r.cachedPromptTokens = reused }   // first admission: reused ≤ prompt - 1
                if reused > 0 {
                    metrics.prefixCacheHitTokens.increment(by: reused)
                    report.reusedPrefix.append(.init(requestId: r.job.requestId, tokens: reused))
                }
            }
            if r.admittedAt == nil {
                r.admittedAt = now()
                EngineMetrics.record(metrics.queueTime, seconds: r.admittedAt! - r.submittedAt)
            }
            running.append(r)
            perUser[r.job.userId, default: 0] += 1
            owed += need
            report.admitted.append(r.job.requestId)
        }
    }

    /// Positions a request wants room for: its tokens plus min(reply left, headroom), within the context.
    private func plannedLength(_ r: ScheduledRequest) -> Int {
        let replyLeft = max(0, r.job.maxTokens - r.generatedCount)
        return min(r.tokens.count + min(replyLeft, settings.admissionHeadroomTokens), cache.contextLength)
    }

    /// `budget` prompt tokens split between users: equal shares per pass (water-filling), the pass
    /// order rotating by one user each step so rounding favours nobody. Within a user, the request
    /// with the fewest prompt tokens left goes first (then the oldest): a short question starts
    /// streaming at once instead of waiting behind the same user's long paste, which keeps going
    /// with the rest of the budget.
    private func allocatePrefill(budget: Int) -> [(ScheduledRequest, Int)] {
        let prefilling = running.filter { !$0.isDecoding && $0.pendingCount > 0 }
        guard !prefilling.isEmpty else { return [] }
        var users: [Int64] = []
        var byUser: [Int64: [ScheduledRequest]] = [:]
        for r in prefilling {
            if byUser[r.job.userId] == nil { users.append(r.job.userId) }
            byUser[r.job.userId, default: []].append(r)
        }
        for u in users {
            byUser[u] = byUser[u]!.enumerated()
                .sorted { ($0.element.pendingCount, $0.offset) < ($1.element.pendingCount, $1.offset) }
                .map(\.element)
        }
        let shift = (stepIndex - 1) % users.count
        users = Array(users[shift...] + users[..<shift])

        var grant: [ObjectIdentifier: Int] = [:]
        var remaining = budget
        var active = users
        while remaining > 0 && !active.isEmpty {
            let share = max(1, remaining / active.count)
            var stillHungry: [Int64] = []
            for u in active where remaining > 0 {
                var give = min(share, remaining)
                var hungry = false
                for r in byUser[u]! {
                    let left = r.pendingCount - grant[ObjectIdentifier(r), default: 0]
                    let g = min(left, give)
                    if g > 0 {
                        grant[ObjectIdentifier(r), default: 0] += g
                        give -= g
                        remaining -= g
                    }
                    if left - g > 0 { hungry = true }
                }
                if hungry { stillHungry.append(u) }
            }
            active = stillHungry
        }
        return prefilling.compactMap { r in grant[ObjectIdentifier(r)].map { (r, $0) } }
    }

    /// One batched forward over the plan; on failure, each entry alone so only the culprit fails.
    private func run(_ plan: [(request: ScheduledRequest, count: Int)]) {
        let inputs = plan.map { r, n in
            let start = r.sequence.length
            return SequenceInput(sequence: r.sequence, tokens: Array(r.tokens[start..<(start + n)]),
                                 logits: start + n == r.tokens.count ? .last : .none)
        }
        do {
            let logits = try model.forward(inputs)
            publish(plan.map(\.request))
            for (e, entry) in plan.enumerated() { consume(entry.request, fed: entry.count, logits: logits, entry: e) }
        } catch {
            logger.warning("batched step failed; retrying its entries one by one", metadata: ["error": "\(error)"])
            for (entry, input) in zip(plan, inputs) {
                do {
                    let logits = try model.forward([input])
                    publish([entry.request])
                    consume(entry.request, fed: entry.count, logits: logits, entry: 0)
                } catch {
                    fail(entry.request, Self.engineError(error))
                }
            }
        }
    }

    /// Registers the blocks the step filled, so later requests with the same prefix share them
    /// (before `consume`, which releases the sequences of finished requests).
    private func publish(_ requests: [ScheduledRequest]) {
        guard settings.prefixCaching else { return }
        for r in requests { cache.publishFullBlocks(r.sequence) }
    }

    /// After a forward: counts the fed tokens; when they were the last pending ones, samples the next.
    private func consume(_ r: ScheduledRequest, fed: Int, logits: BatchLogits, entry: Int) {
        guard let row = logits.last(entry: entry) else { return }   // mid-prompt chunk
        let t = now()
        if !r.promptReported {
            r.promptReported = true
            metrics.promptTokens.increment(by: r.job.prompt.count)
            r.continuation.yield(.promptProcessed(promptTokens: r.job.prompt.count))
        }
        if r.generatedCount >= r.job.maxTokens { finish(r, .length); return }
        let token = r.sampler.sample(row)
        if r.job.stopTokenIds.contains(token) { finish(r, .stop); return }
        r.tokens.append(token)
        r.generatedCount += 1
        r.sampler.observe(token)
        r.job.onToken?(token)
        metrics.generatedTokens.increment()
        if r.firstTokenAt == nil {
            r.firstTokenAt = t
            EngineMetrics.record(metrics.timeToFirstToken, seconds: t - r.submittedAt)
        }
        r.lastTokenAt = t
        let text = r.decoder.append(token)
        r.unreportedTokens += 1
        if !text.isEmpty {
            r.continuation.yield(.text(text, tokenCount: r.unreportedTokens))
            r.unreportedTokens = 0
        }
        // Another token needs the last one fed at position tokens.count - 1 < contextLength.
        if r.generatedCount >= r.job.maxTokens || r.tokens.count > cache.contextLength { finish(r, .length) }
    }

    // MARK: - Ending requests

    private func finish(_ r: ScheduledRequest, _ reason: FinishReason) {
        let tail = r.decoder.finish()
        if !tail.isEmpty || r.unreportedTokens > 0 {
            if !tail.isEmpty { r.continuation.yield(.text(tail, tokenCount: r.unreportedTokens)) }
            r.unreportedTokens = 0
        }
        if let first = r.firstTokenAt, let last = r.lastTokenAt, r.generatedCount > 1 {
            EngineMetrics.record(metrics.timePerOutputToken, seconds: (last - first) / Double(r.generatedCount - 1))
        }
        EngineMetrics.record(metrics.latency, seconds: now() - r.submittedAt)
        let usage = GenerationUsage(promptTokens: r.job.prompt.count, completionTokens: r.generatedCount,
                                    cachedPromptTokens: r.cachedPromptTokens)
        end(r, outcome: reason.rawValue) {
            $0.yield(.finished(reason, usage))
            $0.finish()
        }
    }

    private func fail(_ r: ScheduledRequest, _ error: ChatEngineError) {
        logger.warning("request failed", metadata: ["request": "\(r.job.requestId)", "error": "\(error)"])
        end(r, outcome: "failed") { $0.finish(throwing: error) }
    }

    private func removeCancelled(_ ids: Set<UInt64>) {
        for r in running + waiting where ids.contains(r.id) {
            end(r, outcome: "cancelled") { $0.finish() }
        }
    }

    /// Releases the request's blocks, removes it from the lists, closes its stream.
    private func end(_ r: ScheduledRequest, outcome: String, close: (AsyncThrowingStream<GenerationEvent, Error>.Continuation) -> Void) {
        guard !r.ended else { return }
        r.ended = true
        if let s = r.sequence { cache.release(s) }
        r.sequence = nil
        running.removeAll { $0 === r }
        waiting.removeAll { $0 === r }
        close(r.continuation)
        metrics.count(outcome: outcome)
        condition.lock()
        acceptedCount -= 1
        condition.unlock()
    }

    /// Gives back the request's blocks and queues it first; its tokens so far are recomputed later.
    private func preempt(_ r: ScheduledRequest) {
        cache.release(r.sequence)
        running.removeAll { $0 === r }
        waiting.insert(r, at: 0)
        metrics.preemptions.increment()
        metrics.count(outcome: "preempted")
        logger.info("preempted a request for lack of KV blocks",
                    metadata: ["request": "\(r.job.requestId)", "tokens": "\(r.tokens.count)"])
    }

    private func updateGauges() {
        metrics.running.record(running.count)
        metrics.waiting.record(waiting.count)
        metrics.kvBlocksUsed.record(cache.usedBlockCount)
        metrics.kvBlocksCached.record(cache.cachedBlockCount)
    }

    static func engineError(_ error: Error) -> ChatEngineError {
        if let e = error as? ChatEngineError { return e }
        switch error as? InferenceError {
        case .tokenOutOfRange, .invalidBatch: return .invalidRequest("\(error)")
        case .contextLimitExceeded(let length, let adding, let limit):
            return .contextLengthExceeded(promptTokens: length + adding, limit: limit)
        default: return .failed("\(error)")
        }
    }

    // MARK: - Introspection (tests)

    /// Running and waiting request ids, engine thread only.
    public var runningRequestIds: [String] { running.map(\.job.requestId) }
    public var waitingRequestIds: [String] { waiting.map(\.job.requestId) }
}

/// One request inside the scheduler. Engine thread only (except `id` and the continuation).
final class ScheduledRequest {
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
    var promptReported = false
    /// Prompt tokens attached from the prefix cache at first admission (usage reports them).
    var cachedPromptTokens = 0
    var unreportedTokens = 0
    var ended = false
    let submittedAt: Double
    var admittedAt: Double?
    var firstTokenAt: Double?
    var lastTokenAt: Double?

    init(id: UInt64, job: SchedulerJob, continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation,
         decoder: StreamingDecoder, submittedAt: Double) {
        self.id = id
        self.job = job
        self.continuation = continuation
        self.decoder = decoder
        self.submittedAt = submittedAt
        tokens = job.prompt
        sampler = Sampler(parameters: job.sampling)
        sampler.observe(job.prompt)
    }

    /// Tokens not yet in the KV sequence.
    var pendingCount: Int { tokens.count - (sequence?.length ?? 0) }
    /// Only the last sampled token is pending: one decode token this step.
    var isDecoding: Bool { promptReported && pendingCount == 1 }
}
