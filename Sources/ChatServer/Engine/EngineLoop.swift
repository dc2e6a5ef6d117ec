// The engine loop of one model (continuous batching): a thread that takes submissions from an
// inbox and runs steps. Each step is ONE Model.forward over one decode token for every running
// reply plus a bounded budget of prompt tokens (chunked prefill); requests join and leave between
// steps. A step is planned by `StepPlanner` (pure policy), executed here, and its logits turned
// into tokens, text and stops by `OutputProcessor` (vLLM's schedule -> execute -> process outputs).
//
// Threads: `submit` and stream cancellation may come from any thread; they only touch the inbox
// under `condition`. Everything else (model, cache, running/waiting lists, samplers, decoders)
// belongs to the engine thread, which calls `step()` in a loop (tests call `step()` themselves and
// never start the thread).
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Tokenizer
import Transformer

public final class EngineLoop: @unchecked Sendable {
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
    private var inbox: [EngineRequest] = []
    private var cancelledIds: Set<UInt64> = []
    /// Accepted and not yet ended (inbox + waiting + running): what the queue limit bounds.
    private var acceptedCount = 0
    private var nextId: UInt64 = 0
    private var stopping = false
    private var threadRunning = false

    // Engine-thread state.
    private var waiting: [EngineRequest] = []
    /// In admission order (the last one is the first to be preempted).
    private var running: [EngineRequest] = []
    private var stepIndex = 0
    /// A forward step wrote into the pool since its unused memory was last released.
    private var cacheTouched = false
    /// The prompt tokens a step may prefill, learned from the steps' durations (see `PrefillBudget`).
    private(set) var budget: PrefillBudget
    private let planner: StepPlanner
    private let outputs: OutputProcessor
    public private(set) var lastStep = StepReport()

    public init(model: Model, cache: KVCache, tokenizer: Tokenizer, settings: SchedulerSettings,
                modelId: String, logger: Logger = Logger(label: "sarvam.engine"),
                now: @escaping @Sendable () -> Double = EngineLoop.monotonicSeconds) throws {
        try settings.validate()
        self.model = model
        self.cache = cache
        contextLength = cache.contextLength
        blockSize = cache.blockSize
        blockCount = cache.blockCount
        budget = PrefillBudget(settings: settings)
        planner = StepPlanner(settings: settings)
        self.tokenizer = tokenizer
        self.settings = settings
        self.modelId = modelId
        self.logger = logger
        self.now = now
        metrics = EngineMetrics(model: modelId)
        outputs = OutputProcessor(metrics: metrics, contextLength: cache.contextLength, now: now)
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
        let request = EngineRequest(id: nextId, job: job, continuation: continuation,
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

    /// Intake, cancellation, the plan (`StepPlanner`), one batched forward over it, and the outputs
    /// (`OutputProcessor`). Engine thread only.
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

        if !waiting.isEmpty {
            let admitted = planner.admissions(waiting: waiting.map(plannerView), running: running.map(plannerView), pool: poolState)
            for id in admitted { admit(id, &report) }
        }

        let plan = planner.batch(running: running.map(plannerView), pool: poolState,
                                 prefillBudget: budget.tokens(decoding:), rotation: stepIndex - 1)
        let byId = Dictionary(uniqueKeysWithValues: running.map { ($0.id, $0) })
        for id in plan.failed {
            fail(byId[id]!, ChatEngineError.failed(
                "the reply needs more KV cache than the whole pool holds (\(cache.blockCount) blocks); raise the KV cache budget"))
        }
        for id in plan.preempted {
            preempt(byId[id]!)
            report.preempted.append(byId[id]!.job.requestId)
        }
        var entries: [(request: EngineRequest, count: Int)] = plan.decode.map { (byId[$0]!, 1) }
        entries += plan.prefill.map { (byId[$0.id]!, $0.tokens) }
        report.decoded = plan.decode.map { byId[$0]!.job.requestId }
        report.prefilled = plan.prefill.map { .init(requestId: byId[$0.id]!.job.requestId, tokens: $0.tokens) }

        if !entries.isEmpty {
            cacheTouched = true
            run(entries)
            cache.evictCachedBlocks(keeping: cachedBlocks(bytes: settings.maxCachedPrefixBytes))
            let duration = now() - stepStart
            EngineMetrics.record(metrics.stepDuration, seconds: duration)
            budget.record(decoding: report.decoded.count, prefilled: report.prefilled.reduce(0) { $0 + $1.tokens }, seconds: duration)
        }
        updateGauges()
        lastStep = report
        return report
    }

    private func plannerView(_ r: EngineRequest) -> PlannerRequest {
        r.plannerView(cache: cache, headroom: settings.admissionHeadroomTokens)
    }

    private var poolState: KVPoolState { KVPoolState(freeBlocks: cache.freeBlockCount, blockSize: blockSize) }

    /// Moves a waiting request to the running set; a new (or preempted) one starts after the
    /// longest cached prefix of its tokens.
    private func admit(_ id: UInt64, _ report: inout StepReport) {
        guard let i = waiting.firstIndex(where: { $0.id == id }) else { return }
        let r = waiting.remove(at: i)
        if r.sequence == nil { r.sequence = cache.makeSequence() }
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
        report.admitted.append(r.job.requestId)
    }

    /// One batched forward over the entries; on failure, each entry alone so only the culprit fails.
    private func run(_ entries: [(request: EngineRequest, count: Int)]) {
        let inputs = entries.map { r, n in
            let start = r.sequence.length
            return SequenceInput(sequence: r.sequence, tokens: Array(r.tokens[start..<(start + n)]),
                                 logits: start + n == r.tokens.count ? .last : .none)
        }
        do {
            let logits = try model.forward(inputs)
            publish(entries.map(\.request))
            for (e, entry) in entries.enumerated() { consume(entry.request, logits: logits, entry: e) }
        } catch {
            logger.warning("batched step failed; retrying its entries one by one", metadata: ["error": "\(error)"])
            for (entry, input) in zip(entries, inputs) {
                do {
                    let logits = try model.forward([input])
                    publish([entry.request])
                    consume(entry.request, logits: logits, entry: 0)
                } catch {
                    fail(entry.request, Self.engineError(error))
                }
            }
        }
    }

    /// Registers the blocks the step filled, so later requests with the same prefix share them
    /// (before the outputs are processed, which releases the sequences of finished requests).
    private func publish(_ requests: [EngineRequest]) {
        guard settings.prefixCaching else { return }
        for r in requests { cache.publishFullBlocks(r.sequence) }
    }

    /// Hands an entry's logits (nil for a mid-prompt chunk) to the output processor; ends the reply when it says so.
    private func consume(_ r: EngineRequest, logits: BatchLogits, entry: Int) {
        guard let row = logits.last(entry: entry) else { return }
        if let reason = outputs.process(r, logits: row) {
            outputs.finish(r, reason)
            end(r, outcome: reason.rawValue) { $0.finish() }
        }
    }

    // MARK: - Ending requests

    private func fail(_ r: EngineRequest, _ error: ChatEngineError) {
        logger.warning("request failed", metadata: ["request": "\(r.job.requestId)", "error": "\(error)"])
        end(r, outcome: "failed") { $0.finish(throwing: error) }
    }

    private func removeCancelled(_ ids: Set<UInt64>) {
        for r in running + waiting where ids.contains(r.id) {
            end(r, outcome: "cancelled") { $0.finish() }
        }
    }

    /// Releases the request's blocks, removes it from the lists, closes its stream.
    private func end(_ r: EngineRequest, outcome: String, close: (AsyncThrowingStream<GenerationEvent, Error>.Continuation) -> Void) {
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
    private func preempt(_ r: EngineRequest) {
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
