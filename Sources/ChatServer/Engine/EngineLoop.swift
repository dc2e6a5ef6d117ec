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
    private var acceptedByUser: [Int64: Int] = [:]
    /// What the engine thread last published for refusals: see `QueueOutlook`.
    private var outlook = QueueOutlook()
    private var nextId: UInt64 = 0
    private var stopping = false
    private var threadRunning = false
    /// A snapshot read finished since the engine thread last looked (it must not sleep on it).
    private var snapshotReady = false

    // Engine-thread state.
    private var waiting: [EngineRequest] = []
    /// In admission order (the last one is the first to be preempted).
    private var running: [EngineRequest] = []
    /// A forward step wrote into the pool since its unused memory was last released.
    private var cacheTouched = false
    /// What steps cost: measured at warm-up, its speed learned from the steps (tests set it).
    var cost: StepCostModel
    /// Sequences that run at once: the setting, or what the measured step cost allows at the SLO.
    public private(set) var capacity: Int
    private var planner: StepPlanner
    /// Steps in a row that decoded but could fit no prompt token.
    private var starvedSteps = 0
    /// The share of the inter-token target steps are planned for, learned from their overruns.
    private var margin: StepMargin
    /// The previous step with decode rows: when it started and what it was predicted to last.
    private var previousDecodeStep: (start: Double, predicted: Double)?
    /// The latest intervals between decode steps (what streaming replies wait between tokens).
    private var recentIntervals: [Double] = []
    /// When the current step started (one clock reading per step: the tests' clock moves on each).
    private var stepStart = 0.0
    /// Seconds between the ends of requests (exponential average), for the queue's predicted wait.
    private var secondsBetweenEnds: Double?
    private var lastEndAt: Double?
    /// Since when the queue's predicted wait has exceeded the time-to-first-token target.
    private var overloadedSince: Double?
    private let outputs: OutputProcessor
    public private(set) var lastStep = StepReport()
    /// One line per step when set (`StepTrace`), times from `startedAt`.
    private let stepTrace: StepTrace?
    /// Set before `start` when other engines share the cores: each step waits its turn.
    public var computeGate: ComputeGate?
    private let startedAt: Double
    /// KV snapshots on disk (nil: off): chains saved when evicted, loaded before admission.
    public let snapshotStore: KVSnapshotStore?
    private var snapshotter: KVSnapshotter?
    /// Signalled when the engine thread has stopped and saved its snapshots.
    private let stopped = DispatchSemaphore(value: 0)
    /// Speculative decoding's draft model and cache, and its prompt lookup (nil: off).
    let draft: SpeculativeDraft?
    let lookup: PromptLookup?

    public init(
        model: Model, cache: KVCache, tokenizer: Tokenizer, settings: SchedulerSettings,
        modelId: String, logger: Logger = Logger(label: "sarvam.engine"), stepTrace: StepTrace? = nil,
        now: @escaping @Sendable () -> Double = EngineLoop.monotonicSeconds, snapshotStore: KVSnapshotStore? = nil,
        draftModel: Model? = nil, draftCache: KVCache? = nil
    ) throws {
        try settings.validate()
        if snapshotStore != nil && !settings.prefixCaching {
            throw ChatEngineError.invalidRequest("KV snapshots need prefix caching: turn both on or snapshots off")
        }
        self.snapshotStore = snapshotStore
        if let draftModel, let draftCache {
            guard draftCache.contextLength >= cache.contextLength else {
                throw ChatEngineError.failed("the draft's KV cache holds fewer positions than the model's")
            }
            draft = try SpeculativeDraft(
                model: draftModel, cache: draftCache, target: model, prefixCaching: settings.prefixCaching, logger: logger)
        } else {
            draft = nil
        }
        lookup = settings.promptLookup ? PromptLookup() : nil
        self.model = model
        self.cache = cache
        contextLength = cache.contextLength
        blockSize = cache.blockSize
        blockCount = cache.blockCount
        cost = Self.costGuess(model.configuration)
        capacity = settings.maxRunningSequences ?? SchedulerSettings.capacityCeiling
        planner = StepPlanner(settings: settings, capacity: capacity)
        margin = StepMargin(highest: settings.stepMargin)
        outlook = QueueOutlook(capacity: capacity, freeSlots: capacity)
        self.tokenizer = tokenizer
        self.settings = settings
        self.modelId = modelId
        self.logger = logger
        self.now = now
        self.stepTrace = stepTrace
        startedAt = now()
        metrics = EngineMetrics(model: modelId)
        outputs = OutputProcessor(
            metrics: metrics, contextLength: cache.contextLength, now: now,
            timeToFirstTokenTarget: settings.timeToFirstTokenTarget,
            interTokenLatencyTarget: settings.interTokenLatencyTarget)
        metrics.capacity.record(capacity)
        metrics.ttftTarget.record(settings.timeToFirstTokenTarget)
        metrics.itlTarget.record(settings.interTokenLatencyTarget ?? 0)
        metrics.kvBlocksTotal.record(cache.blockCount)
        metrics.kvBlocksUsed.record(cache.usedBlockCount)
        metrics.kvBlocksCached.record(cache.cachedBlockCount)
        metrics.running.record(0)
        metrics.waiting.record(0)
        snapshotter = snapshotStore.map { store in
            KVSnapshotter(
                store: store, cache: cache, metrics: CacheMetrics(model: modelId, cache: "kv_snapshot"),
                notify: { [weak self] in self?.wake() })
        }
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
        if let retryAfter = refusal(userId: job.userId, promptTokens: job.prompt.count) {
            metrics.count(outcome: "rejected")
            throw ChatEngineError.busy(retryAfterSeconds: retryAfter)
        }
        nextId += 1
        let request = EngineRequest(
            id: nextId, job: job, continuation: continuation,
            decoder: tokenizer.makeStreamingDecoder(skipSpecial: true), submittedAt: now())
        let id = nextId
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id: id) }
        }
        inbox.append(request)
        acceptedCount += 1
        acceptedByUser[job.userId, default: 0] += 1
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

    /// Why a new request of `userId` is refused, as the seconds to tell it to wait; nil: accepted.
    /// Under `condition`. Refused: a full queue (capacity + queue limit accepted), a user over their
    /// share (`maxAcceptedPerUser`, by default half of capacity + queue), or a queue whose predicted
    /// wait has exceeded the time-to-first-token target for `overloadSeconds` when this request
    /// would wait longer than the target too.
    private func refusal(userId: Int64, promptTokens: Int) -> Int? {
        let total = outlook.capacity + settings.queueLimit
        let interval = outlook.secondsBetweenEnds ?? Double(settings.retryAfterSeconds)
        func seconds(_ x: Double) -> Int { max(settings.retryAfterSeconds, Int(x.rounded(.up))) }
        if acceptedCount >= total { return seconds(interval) }
        let perUser = settings.maxAcceptedPerUser ?? max(1, total / 2)
        if acceptedByUser[userId, default: 0] >= perUser { return seconds(interval) }
        if let since = outlook.overloadedSince, now() - since >= settings.overloadSeconds,
            let wait = outlook.predictedWait(promptTokens: promptTokens), wait > settings.timeToFirstTokenTarget
        {
            return seconds(wait)
        }
        return nil
    }

    /// The consumer went away: the request ends at the start of the next step.
    private func cancel(id: UInt64) {
        condition.lock()
        cancelledIds.insert(id)
        condition.signal()
        condition.unlock()
    }

    /// How loaded the engine is for a new prompt of `promptTokens`: its predicted wait for a
    /// running slot (nil when it would be refused) and the recent p95 between decode steps.
    public func load(promptTokens: Int) -> TierLoad {
        condition.lock()
        defer { condition.unlock() }
        if refusal(userId: Int64.min, promptTokens: promptTokens) != nil {
            return TierLoad(predictedWaitSeconds: nil, stepSecondsP95: outlook.intervalP95)
        }
        let wait = outlook.routingWait(promptTokens: promptTokens, perRequest: settings.timeToFirstTokenTarget)
        return TierLoad(predictedWaitSeconds: wait, stepSecondsP95: outlook.intervalP95)
    }

    /// Requests accepted and not yet ended (running + waiting).
    public var activeRequestCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return acceptedCount
    }

    // MARK: - Engine thread

    /// Runs the largest step the loop will run, through throwaway sequences: a full prefill chunk
    /// beside `capacity - 1` decode rows, so the model's scratch grows to its working size now (the
    /// memory `/health` turns ready at is the memory the server returns to after a burst, and the
    /// first real step pays no page faults). Then measures what steps cost (decode steps of one and
    /// of many rows, prompt chunks) to seed the cost model and, when no maximum is set, to size
    /// the capacity at the SLO. Call before `start()`.
    public func warmUp() throws {
        let token = min(tokenizer.bosTokenId ?? 0, model.configuration.vocabSize - 1)
        /// One forward over fresh sequences: `rows` decode rows (position 0, with logits) and a
        /// prompt chunk of `chunk` tokens (without logits: a chunk in the middle of a prompt).
        func forward(rows: Int, chunk: Int) throws -> Double {
            let sequences = (0..<(rows + (chunk > 0 ? 1 : 0))).map { _ in cache.makeSequence() }
            defer { sequences.forEach(cache.release) }
            let inputs = sequences.enumerated().map { i, s in
                i == rows
                    ? SequenceInput(sequence: s, tokens: Array(repeating: token, count: chunk), logits: .none)
                    : SequenceInput(sequence: s, tokens: [token])
            }
            let start = now()
            _ = try model.forward(inputs)
            return now() - start
        }
        /// The fastest of a few runs: the box may be busy.
        func best(_ runs: Int, rows: Int, chunk: Int) throws -> Double {
            try (0..<runs).map { _ in try forward(rows: rows, chunk: chunk) }.min()!
        }
        let rows = max(1, min(capacity, blockCount / 2))
        let chunk = max(1, min(settings.prefillTokensPerStep, contextLength, (blockCount - rows) * blockSize))
        _ = try forward(rows: rows - 1, chunk: chunk)
        if let draft {
            // The draft's largest forward: a prompt chunk beside decode rows of up to 8 positions.
            let chunkSequence = draft.cache.makeSequence()
            let sequences = (0..<min(rows, draft.maxStreams)).map { _ in draft.cache.makeSequence() }
            defer { (sequences + [chunkSequence]).forEach(draft.cache.release) }
            _ = try draft.model.forward(
                sequences.map { SequenceInput(sequence: $0, tokens: [token, token]) }
                    + [SequenceInput(sequence: chunkSequence, tokens: Array(repeating: token, count: chunk), logits: .none)])
        }
        cacheTouched = true
        guard settings.interTokenLatencyTarget != nil else { return }

        // Decode steps of M rows at position 0 (no attention to speak of) and prompt chunks of M
        // tokens (their attention taken out); the difference at equal M is the logits' cost per row.
        let guess = Self.costGuess(model.configuration)
        var decode: [StepCostModel.Point] = []
        for m in [1, 2, 4, 8, 16, 32, 64] where m <= blockCount / 2 {
            decode.append(.init(rows: m, seconds: try best(m == 1 ? 3 : 2, rows: m, chunk: 0)))
        }
        guard let largest = decode.last, decode.allSatisfy({ $0.seconds > 0 }) else { return }
        let attentionPer1024 = guess.attentionSecondsPer1024 * largest.seconds / guess.predict(rows: largest.rows, attendedPositions: 0)
        func prompt(_ m: Int) throws -> Double {
            let seconds = try best(2, rows: 0, chunk: m)
            return max(0, seconds - attentionPer1024 * Double(StepCostModel.attended(tokens: m, from: 0)) / 1024)
        }
        // The median of what M = 16, 32, 64 say, kept within half to twice the model's FLOP share
        // of a decode row (a busy box makes single differences noisy).
        let measuredShares = try decode.filter { $0.rows >= 16 }.map { p in max(0, p.seconds - (try prompt(p.rows))) / Double(p.rows) }
        let perRow = largest.seconds / Double(largest.rows)
        let flopShare =
            guess.logitRowSeconds / max(1e-12, guess.predict(rows: 2, attendedPositions: 0) - guess.predict(rows: 1, attendedPositions: 0))
        let logitRow =
            measuredShares.isEmpty
            ? flopShare * perRow
            : min(max(measuredShares.sorted()[measuredShares.count / 2], 0.5 * flopShare * perRow), 2 * flopShare * perRow)
        var curve = decode.map { StepCostModel.Point(rows: $0.rows, seconds: max(1e-6, $0.seconds - logitRow * Double($0.rows))) }
        if chunk > largest.rows {
            curve.append(.init(rows: chunk, seconds: max(curve.last!.seconds, try prompt(chunk))))
        }
        cost = StepCostModel(curve: curve, attentionSecondsPer1024: attentionPer1024, logitRowSeconds: logitRow)
        updateCapacity()
        publishOutlook()
        logger.info(
            "engine step costs measured",
            metadata: [
                "model": "\(modelId)", "capacity": "\(capacity)",
                "step_ms_by_rows": "\(curve.map { "\($0.rows):\(String(format: "%.1f", $0.seconds * 1e3))" }.joined(separator: " "))",
                "logit_row_ms": "\(String(format: "%.2f", logitRow * 1e3))",
            ])
    }

    /// Without a set maximum, the capacity follows the measured step cost: the most decode rows
    /// that fit the decode budget at the running requests' mean planned length (1,024 positions,
    /// a chat with a pasted page, when idle). Admission checks the cost of each newcomer as well.
    private func updateCapacity() {
        guard settings.maxRunningSequences == nil, let target = planner.stepTarget else { return }
        let context = running.isEmpty ? 1024 : running.reduce(0) { $0 + $1.tokens.count } / running.count + settings.admissionHeadroomTokens
        let rows = StepPlanner.decodeCapacity(
            cost: cost, stepTarget: target, prefillReserve: settings.prefillReserve,
            contextPerRow: min(contextLength, context), ceiling: SchedulerSettings.capacityCeiling)
        guard rows != capacity else { return }
        capacity = rows
        planner.capacity = rows
        metrics.capacity.record(rows)
    }

    /// A first guess of the step costs from the model's shape, before anything is measured: the
    /// weights (about 0.6 byte each) read once per step, 2 FLOPs per weight and row, attention's
    /// FLOPs per attended position (4 · layers · heads · headDim). The warm-up measures the rows
    /// and keeps attention's ratio to them.
    static func costGuess(_ c: ModelConfiguration) -> StepCostModel {
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        let perLayer = c.hiddenSize * (2 * q + 2 * kv) + 3 * c.hiddenSize * c.intermediateSize
        let body = c.numHiddenLayers * perLayer, head = c.hiddenSize * c.vocabSize
        return StepCostModel.guess(
            weightBytes: (body + head) * 6 / 10, rowFlops: 2 * body, logitRowFlops: 2 * head,
            attentionFlopsPerPosition: 4 * c.numHiddenLayers * q)
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

    /// `shutdown`, then waits until the engine thread has stopped and its KV snapshots are on disk.
    public func shutdownAndWait() {
        shutdown()
        condition.lock()
        let started = threadRunning
        condition.unlock()
        if started { stopped.wait() } else { snapshotter?.flush() }
    }

    /// Deletes the KV snapshots of a conversation (any thread); returns when its files are gone.
    public func forgetConversation(userId: Int64, conversationId: String) {
        snapshotStore?.remove(owner: KVSnapshotOwner(user: userId, conversation: conversationId))
    }

    /// Saves every chain of ended requests still only in memory (engine thread; tests).
    public func saveSnapshots() { snapshotter?.flush() }

    private func wake() {
        condition.lock()
        snapshotReady = true
        condition.signal()
        condition.unlock()
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
            if running.isEmpty && waiting.isEmpty {
                computeGate?.noteStreaming(self, false)
                releaseIdleCacheMemory()
                stepTrace?.flush()
            }
            condition.lock()
            while !stopping && inbox.isEmpty && cancelledIds.isEmpty && running.isEmpty && waiting.isEmpty {
                condition.wait()
            }
            let stop = stopping
            condition.unlock()
            if stop { break }
            let report = computeGate.map { $0.run { step() } } ?? step()
            if !report.didWork {
                // Waiting requests that cannot be admitted yet and nothing running: wait for news.
                condition.lock()
                if inbox.isEmpty && cancelledIds.isEmpty && !stopping && !snapshotReady {
                    _ = condition.wait(until: Date(timeIntervalSinceNow: 0.05))
                }
                snapshotReady = false
                condition.unlock()
            }
        }
        failEverything(ChatEngineError.failed("the engine is shutting down"))
        stepTrace?.flush()
        snapshotter?.flush()
        stopped.signal()
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
        stepStart = now()
        var report = StepReport()

        condition.lock()
        let arrivals = inbox
        inbox.removeAll()
        let cancels = cancelledIds
        cancelledIds.removeAll()
        condition.unlock()
        waiting.append(contentsOf: arrivals)
        if let snapshotter { takeSnapshots(snapshotter, arrivals: arrivals) }
        if !cancels.isEmpty { removeCancelled(cancels) }

        updateCapacity()
        if !waiting.isEmpty {
            let admission = planner.admissions(
                waiting: waiting.filter { !$0.loadingSnapshot }.map(plannerView), running: running.map(plannerView),
                pool: poolState, cost: cost)
            for id in admission.displaced {
                guard let r = running.first(where: { $0.id == id }) else { continue }
                preempt(r, reason: "a request ahead in line needs its slot")
                report.preempted.append(r.job.requestId)
            }
            for id in admission.admitted { admit(id, &report) }
        }

        let views = running.map(plannerView)
        if let gate = computeGate, let itl = settings.interTokenLatencyTarget {
            // Another engine's streams wait through this step too: prompt-only steps stay short then.
            planner.promptStepTarget = gate.othersStreaming(than: self) ? itl * 0.45 : settings.promptStepTargetSeconds
        }
        let plan = planner.batch(running: views, pool: poolState, cost: cost, starvedSteps: starvedSteps)
        computeGate?.noteStreaming(self, !plan.decode.isEmpty)
        let computed = Dictionary(uniqueKeysWithValues: views.map { ($0.id, $0.computed) })
        var attended = 0
        for id in plan.decode { attended += computed[id]! + 1 }
        for g in plan.prefill { attended += StepCostModel.attended(tokens: g.tokens, from: computed[g.id]!) }
        let prefilling = views.contains { !$0.isDecoding && $0.pending > 0 }
        starvedSteps = !plan.decode.isEmpty && plan.prefill.isEmpty && prefilling ? starvedSteps + 1 : 0
        let byId = Dictionary(uniqueKeysWithValues: running.map { ($0.id, $0) })
        for id in plan.failed {
            fail(
                byId[id]!,
                ChatEngineError.failed(
                    "the reply needs more KV cache than the whole pool holds (\(cache.blockCount) blocks); raise the KV cache budget"))
        }
        for id in plan.preempted {
            preempt(byId[id]!)
            report.preempted.append(byId[id]!.job.requestId)
        }
        // The step's rows and logit rows before drafts: decode rows, prompt tokens, and the last
        // chunk of each prompt.
        let promptTokens = plan.prefill.reduce(0) { $0 + $1.tokens }
        let plainRows = plan.decode.count + promptTokens
        let plainLogitRows = plan.decode.count + plan.prefill.filter { computed[$0.id]! + $0.tokens == byId[$0.id]!.tokens.count }.count
        let draftStart = now()
        var drafts: [UInt64: Drafts] = [:]
        if draft != nil || lookup != nil {
            let decoding = plan.decode.map { byId[$0]! }
            let prefilling = plan.prefill.map { (byId[$0.id]!, $0.tokens) }
            drafts = speculate(
                decode: decoding, prefill: prefilling, step: (rows: plainRows, logitRows: plainLogitRows, attended: attended))
        }
        let draftSeconds = draft == nil && lookup == nil ? 0 : now() - draftStart
        var entries: [StepEntry] = plan.decode.map {
            StepEntry(request: byId[$0]!, count: 1, drafts: drafts[$0]?.tokens ?? [], lookupMatch: drafts[$0]?.lookupMatch)
        }
        entries += plan.prefill.map { StepEntry(request: byId[$0.id]!, count: $0.tokens, drafts: []) }
        let draftRows = entries.reduce(0) { $0 + $1.drafts.count }
        for e in entries where !e.drafts.isEmpty {
            let k = e.drafts.count, before = e.request.sequence.length + 1
            attended += k * before + k * (k + 1) / 2
        }
        report.decoded = plan.decode.map { byId[$0]!.job.requestId }
        report.prefilled = plan.prefill.map { .init(requestId: byId[$0.id]!.job.requestId, tokens: $0.tokens) }

        if entries.isEmpty { previousDecodeStep = nil }
        if !entries.isEmpty {
            cacheTouched = true
            // A request's draft tokens are extra rows with logits (the draft steps ran before).
            let rows = plainRows + draftRows
            let logitRows = plainLogitRows + draftRows
            let predicted = cost.predict(rows: rows, logitRows: logitRows, attendedPositions: attended)
            run(entries, &report)
            cache.evictCachedBlocks(keeping: cachedBlocks(bytes: settings.maxCachedPrefixBytes))
            draft?.cache.evictCachedBlocks(keeping: cachedBlocks(bytes: settings.maxCachedPrefixBytes))
            let duration = now() - stepStart
            EngineMetrics.record(metrics.stepDuration, seconds: duration)
            cost.record(rows: rows, logitRows: logitRows, attendedPositions: attended, seconds: max(0, duration - draftSeconds))
            learnMargin(decodeRows: plan.decode.count, predicted: predicted + draftSeconds)
            stepTrace?.append(
                StepTraceRecord(
                    t: stepStart - startedAt, seconds: duration, predicted: predicted, decodeRows: plan.decode.count,
                    promptTokens: promptTokens, promptRequests: plan.prefill.count, logitRows: logitRows, attended: attended,
                    running: running.count, waiting: waiting.count, capacity: capacity, admitted: report.admitted.count,
                    preempted: report.preempted.count, speed: cost.speed, stepTarget: planner.stepTarget))
        }
        updateGauges()
        publishOutlook()
        lastStep = report
        return report
    }

    /// A streaming reply waits from one step's start to the next one's: that interval against the
    /// previous step's prediction moves the planned share of the inter-token target.
    private func learnMargin(decodeRows: Int, predicted: Double) {
        if let previous = previousDecodeStep {
            recentIntervals.append(stepStart - previous.start)
            if recentIntervals.count > 64 { recentIntervals.removeFirst(recentIntervals.count - 64) }
        }
        guard let itl = settings.interTokenLatencyTarget else {
            previousDecodeStep = decodeRows > 0 ? (stepStart, predicted) : nil
            return
        }
        if let previous = previousDecodeStep {
            margin.record(actual: stepStart - previous.start, predicted: previous.predicted)
            planner.stepTarget = itl * margin.value
        }
        previousDecodeStep = decodeRows > 0 ? (stepStart, predicted) : nil
    }

    private func plannerView(_ r: EngineRequest) -> PlannerRequest {
        r.plannerView(cache: cache, headroom: settings.admissionHeadroomTokens, now: stepStart)
    }

    /// Shares with the submitting threads what refusals need: the capacity, the waiting requests'
    /// places in line, how often requests end, and since when the queue has been overloaded (its
    /// last request's predicted wait above the time-to-first-token target).
    private func publishOutlook() {
        let t = stepStart
        var next = QueueOutlook(
            capacity: capacity, freeSlots: max(0, capacity - running.count),
            waitingPriorities: waiting.map { planner.priority(plannerView($0)) }.sorted(),
            displaceablePriorities: running.filter { !$0.promptReported }.map { planner.priority(plannerView($0)) },
            secondsBetweenEnds: secondsBetweenEnds)
        if let tailWait = next.tailWait, tailWait > settings.timeToFirstTokenTarget {
            overloadedSince = overloadedSince ?? t
        } else {
            overloadedSince = nil
        }
        next.overloadedSince = overloadedSince
        if running.isEmpty { recentIntervals.removeAll() }
        let sorted = recentIntervals.sorted()
        next.intervalP95 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.95))]
        condition.lock()
        outlook = next
        condition.unlock()
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
            if r.admittedAt == nil { r.cachedPromptTokens = reused }  // first admission: reused ≤ prompt - 1
            if reused > 0 {
                metrics.prefixCacheHitTokens.increment(by: reused)
                report.reusedPrefix.append(.init(requestId: r.job.requestId, tokens: reused))
            }
        }
        if let loaded = r.loadedSnapshot, let snapshotter {
            r.loadedSnapshot = nil
            let added = snapshotter.attach(loaded, to: r.sequence, tokens: r.tokens)
            if r.admittedAt == nil { r.cachedPromptTokens += added }
            if added > 0 { report.reusedPrefix.append(.init(requestId: r.job.requestId, tokens: added)) }
        }
        if r.admittedAt == nil {
            r.admittedAt = now()
            EngineMetrics.record(metrics.queueTime, seconds: r.admittedAt! - r.submittedAt)
        }
        running.append(r)
        report.admitted.append(r.job.requestId)
    }

    /// Steps in a row whose speculating requests chose no drafts (see `speculate`).
    private var stepsWithoutDrafts = 0
    /// Steps without drafts after which two drafts are tried anyway.
    static let draftProbeInterval = 16
    /// Without a draft model, lookups are tried in steps of at most this many decoding requests
    /// (as `SpeculativeDraft.maxStreams`): beyond, the batched step is compute-bound.
    static let maxSpeculatingStreams = 8

    /// One request's part of a step: `count` of its pending tokens, and when it speculates, the
    /// draft tokens fed after its last one (their rows verify them).
    struct StepEntry {
        var request: EngineRequest
        var count: Int
        var drafts: [Int]
        /// For lookup drafts, the length of the match they came from.
        var lookupMatch: Int? = nil
    }

    /// A request's draft tokens for a step and their source (a lookup match's length, or nil: the
    /// draft model).
    struct Drafts {
        var tokens: [Int]
        var lookupMatch: Int?
    }

    /// One batched forward over the entries; on failure, each entry alone so only the culprit fails.
    private func run(_ entries: [StepEntry], _ report: inout StepReport) {
        let inputs = entries.map { entry in
            let r = entry.request, n = entry.count
            let start = r.sequence.length
            let last = start + n == r.tokens.count
            return SequenceInput(
                sequence: r.sequence, tokens: Array(r.tokens[start..<(start + n)]) + entry.drafts,
                logits: !entry.drafts.isEmpty ? .all : last ? .last : .none)
        }
        do {
            let logits = try model.forward(inputs)
            let outcomes = entries.enumerated().map { e, entry in verify(entry, logits: logits, entry: e, &report) }
            publish(entries.map(\.request))
            for (e, entry) in entries.enumerated() { consume(entry.request, logits: logits, entry: e, outcome: outcomes[e]) }
        } catch {
            logger.warning("batched step failed; retrying its entries one by one", metadata: ["error": "\(error)"])
            // Alone and without drafts: a request fails only for what it would fail without speculation.
            for var entry in entries {
                entry.drafts = []
                let r = entry.request, start = r.sequence.length
                let input = SequenceInput(
                    sequence: r.sequence, tokens: Array(r.tokens[start..<(start + entry.count)]),
                    logits: start + entry.count == r.tokens.count ? .last : .none)
                do {
                    let logits = try model.forward([input])
                    let outcome = verify(entry, logits: logits, entry: 0, &report)
                    publish([entry.request])
                    consume(entry.request, logits: logits, entry: 0, outcome: outcome)
                } catch {
                    fail(entry.request, Self.engineError(error))
                }
            }
        }
        for entry in entries where !entry.request.ended { draft?.settle(entry.request) }
    }

    /// For an entry that speculated: which drafts the target keeps and its next token; the
    /// sequence is cut back to the committed tokens and the kept drafts (so only verified
    /// positions are ever published).
    private func verify(_ entry: StepEntry, logits: BatchLogits, entry e: Int, _ report: inout StepReport)
        -> SpeculativeVerification.Outcome?
    {
        guard !entry.drafts.isEmpty else { return nil }
        let r = entry.request
        let base = logits.entryRows[e].lowerBound
        let outcome = r.speculative!.verify { logits.row(base + $0) }
        let length = r.tokens.count + outcome.accepted
        let kept = cache.truncate(r.sequence, to: length)
        precondition(kept == length, "a speculative tail shares a cached block")
        if let match = entry.lookupMatch, let lookup {
            r.lookupLengths[match - lookup.minimumMatch].record(drafted: entry.drafts.count, accepted: outcome.accepted)
            metrics.lookupDraftTokens.increment(by: entry.drafts.count)
            metrics.acceptedLookupTokens.increment(by: outcome.accepted)
        } else {
            r.draftLength?.record(drafted: entry.drafts.count, accepted: outcome.accepted)
            metrics.draftTokens.increment(by: entry.drafts.count)
            metrics.acceptedDraftTokens.increment(by: outcome.accepted)
        }
        report.draftedTokens += entry.drafts.count
        report.acceptedTokens += outcome.accepted
        return outcome
    }

    /// The request's speculative state, made on first use from the tokens committed so far.
    private func prepareSpeculation(_ r: EngineRequest) {
        if r.speculative == nil {
            var s = SpeculativeSampler(parameters: r.job.sampling)
            s.observe(r.tokens)
            r.speculative = s
        }
        if r.draftLength == nil { r.draftLength = DraftLength() }
        if let lookup, r.lookupLengths.isEmpty {
            // Optimistic at first, so a match is tried and measured (the rates average fast).
            r.lookupLengths = (lookup.minimumMatch...lookup.maximumMatch).map { _ in DraftLength(initialRate: 0.9) }
        }
    }

    /// Which decoding requests speculate this step and their draft tokens; prefilling requests' new
    /// prompt tokens are fed to the draft model too. A request may speculate when at most
    /// `maxSpeculatingStreams` decode, it is past `minTokens` (the stop-token mask) and it is greedy
    /// or has no seed; its room is what its reply, the context and the free KV blocks left by the
    /// plan allow. Its drafts come from prompt lookup when the end of its tokens matches earlier
    /// ones, else from the draft model (when there is one). How many (one k per source for all its requests, 0 for none) is
    /// `DraftLengthChoice`'s: the most expected tokens per second of this step (`step`: its rows,
    /// logit rows and attended positions without drafts), priced by the cost model and, for the
    /// draft model, its measured pass time; lookups are chosen first (they cost no pass), the model's
    /// k then prices its rows on top of theirs. When no source drafts, two drafts are tried every
    /// `draftProbeInterval` steps so the acceptance rates stay current.
    private func speculate(
        decode: [EngineRequest], prefill: [(EngineRequest, Int)], step: (rows: Int, logitRows: Int, attended: Int)
    ) -> [UInt64: Drafts] {
        var free = cache.freeBlockCount
        for r in decode { free -= max(0, cache.blocksNeeded(forLength: r.sequence.length + 1) - r.sequence.blockCount) }
        for (r, n) in prefill { free -= max(0, cache.blocksNeeded(forLength: r.sequence.length + n) - r.sequence.blockCount) }
        var looked: [(request: EngineRequest, k: Int, found: [Int], match: Int)] = []
        var modelled: [(request: EngineRequest, k: Int)] = []
        if decode.count <= (draft?.maxStreams ?? Self.maxSpeculatingStreams) {
            // A sampled request with a seed never speculates: its tokens stay a function of its
            // seed (whether a step drafts depends on the load, and drafting draws other numbers).
            let eligible = decode.filter {
                $0.generatedCount >= $0.job.minTokens && ($0.job.sampling.isGreedy || $0.job.sampling.seed == nil)
            }
            for r in eligible {
                prepareSpeculation(r)
                var k = min(r.draftLength!.maximum, r.job.maxTokens - r.generatedCount - 1, contextLength - r.tokens.count)
                var found: [Int] = [], match = 0
                if let lookup, k > 0 {
                    (found, match) = lookup.draftWithMatch(after: r.tokens, count: k)
                    if !found.isEmpty { k = found.count } else if draft == nil { continue }
                }
                let base = max(r.sequence.blockCount, cache.blocksNeeded(forLength: r.sequence.length + 1))
                while k > 0 && cache.blocksNeeded(forLength: r.sequence.length + 1 + k) - base > free { k -= 1 }
                guard k > 0 else { continue }
                free -= cache.blocksNeeded(forLength: r.sequence.length + 1 + k) - base
                if !found.isEmpty { looked.append((r, k, Array(found.prefix(k)), match)) } else { modelled.append((r, k)) }
            }
        }
        // An extra row of request r attends about as many positions as its decode row.
        let perRow = decode.isEmpty ? 0 : decode.reduce(0) { $0 + $1.sequence.length + 1 } / decode.count
        let cost = self.cost
        func stepSeconds(_ extra: Int) -> Double {
            cost.predict(rows: step.rows + extra, logitRows: step.logitRows + extra, attendedPositions: step.attended + extra * perRow)
        }
        // Drafts never stretch a step past the latency budget the plan kept to.
        let limit = planner.stepTarget
        var lookupK = 0, modelK = 0
        if !looked.isEmpty, let lookup {
            lookupK = DraftLengthChoice.best(
                looked.map { .init(acceptanceRate: $0.request.lookupLengths[$0.match - lookup.minimumMatch].acceptanceRate, cap: $0.k) },
                stepSeconds: stepSeconds, draftPassSeconds: 0, limit: limit)
        }
        if lookupK == 0 && draft != nil {
            // Matches not worth their rows this step may still take the draft model's tokens.
            modelled += looked.map { ($0.request, $0.k) }
            looked = []
        }
        let lookupRows = looked.reduce(0) { $0 + min(lookupK, $1.k) }
        if !modelled.isEmpty, let draft {
            let pass = draft.passSeconds ?? draft.draftCost * cost.predict(rows: decode.count, attendedPositions: step.attended)
            modelK = DraftLengthChoice.best(
                modelled.map { .init(acceptanceRate: $0.request.draftLength!.acceptanceRate, cap: $0.k) },
                stepSeconds: { stepSeconds(lookupRows + $0) }, draftPassSeconds: pass, limit: limit)
        }
        if looked.isEmpty && modelled.isEmpty || lookupK > 0 || modelK > 0 {
            stepsWithoutDrafts = 0
        } else {
            stepsWithoutDrafts += 1
            let probeRows = 2 * (looked.isEmpty ? modelled.count : looked.count)
            if stepsWithoutDrafts >= Self.draftProbeInterval, limit.map({ stepSeconds(probeRows) <= $0 }) ?? true {
                if looked.isEmpty { modelK = 2 } else { lookupK = 2 }
                stepsWithoutDrafts = 0
            }
        }
        var drafts: [UInt64: Drafts] = [:]
        for l in looked where lookupK > 0 {
            let r = l.request
            r.speculative!.beginDraft()
            for token in l.found.prefix(lookupK) { r.speculative!.propose(token: token) }
            drafts[r.id] = Drafts(tokens: r.speculative!.drafts, lookupMatch: l.match)
        }
        guard let draft else { return drafts }
        let chosen = modelK > 0 ? modelled.map { ($0.request, min(modelK, $0.k)) } : []
        // A pass is timed only in runs that feed nothing else (no prompt chunk, no catch-up).
        let plain = prefill.isEmpty && chosen.allSatisfy { $0.0.tokens.count - ($0.0.draftSequence?.length ?? 0) <= 2 }
        let start = now()
        let proposed = draft.run(prefill: prefill.map { (request: $0.0, tokens: $0.1) }, decoding: chosen)
        if plain, let passes = chosen.map(\.1).max() { draft.recordPasses(passes, seconds: now() - start) }
        for (id, tokens) in proposed { drafts[id] = Drafts(tokens: tokens, lookupMatch: nil) }
        return drafts
    }

    /// Registers the blocks the step filled, so later requests with the same prefix share them
    /// (before the outputs are processed, which releases the sequences of finished requests).
    private func publish(_ requests: [EngineRequest]) {
        guard settings.prefixCaching else { return }
        for r in requests { cache.publishFullBlocks(r.sequence) }
    }

    /// Hands an entry's logits (nil for a mid-prompt chunk) to the output processor; ends the reply
    /// when it says so. A speculating entry gives its kept drafts and next token one by one, each
    /// with its own row (stops, limits and logprobs apply per token).
    private func consume(_ r: EngineRequest, logits: BatchLogits, entry: Int, outcome: SpeculativeVerification.Outcome?) {
        guard let outcome else {
            guard let row = logits.last(entry: entry) else { return }
            if let reason = outputs.process(r, logits: row) {
                outputs.finish(r, reason)
                end(r, outcome: reason.rawValue) { $0.finish() }
            }
            return
        }
        let base = logits.entryRows[entry].lowerBound
        let drafts = r.speculative!.drafts
        for (i, token) in (drafts[0..<outcome.accepted] + [outcome.next]).enumerated() {
            if let reason = outputs.process(r, logits: logits.row(base + i), chosen: token) {
                outputs.finish(r, reason)
                end(r, outcome: reason.rawValue) { $0.finish() }
                return
            }
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
        if let s = r.sequence {
            if outcome != "failed" { snapshotter?.requestEnded(owner: r.snapshotOwner, sequence: s) }
            cache.release(s)
        }
        r.sequence = nil
        draft?.release(r)
        running.removeAll { $0 === r }
        waiting.removeAll { $0 === r }
        close(r.continuation)
        metrics.count(outcome: outcome)
        let t = now()
        if let last = lastEndAt { secondsBetweenEnds = (secondsBetweenEnds ?? (t - last)) * 0.8 + (t - last) * 0.2 }
        lastEndAt = t
        condition.lock()
        acceptedCount -= 1
        acceptedByUser[r.job.userId, default: 1] -= 1
        if acceptedByUser[r.job.userId] == 0 { acceptedByUser[r.job.userId] = nil }
        condition.unlock()
    }

    /// Gives back the request's blocks and queues it first; its tokens so far are recomputed later.
    private func preempt(_ r: EngineRequest, reason: String = "lack of KV blocks") {
        cache.release(r.sequence)
        draft?.release(r)
        running.removeAll { $0 === r }
        waiting.insert(r, at: 0)
        metrics.preemptions.increment()
        metrics.count(outcome: "preempted")
        logger.info(
            "preempted a request", metadata: ["request": "\(r.job.requestId)", "tokens": "\(r.tokens.count)", "reason": "\(reason)"])
    }

    private func updateGauges() {
        metrics.running.record(running.count)
        metrics.waiting.record(waiting.count)
        metrics.kvBlocksUsed.record(cache.usedBlockCount)
        metrics.kvBlocksCached.record(cache.cachedBlockCount)
        snapshotter?.publishMetrics()
    }

    /// Starts reading the KV snapshots of new requests that have one (they wait meanwhile), and
    /// hands finished reads to their requests.
    private func takeSnapshots(_ snapshotter: KVSnapshotter, arrivals: [EngineRequest]) {
        for r in arrivals where snapshotter.startLoad(r) { r.loadingSnapshot = true }
        for (id, loaded) in snapshotter.takeFinished() {
            guard let r = waiting.first(where: { $0.id == id }) else { continue }
            r.loadingSnapshot = false
            r.loadedSnapshot = loaded
            if loaded == nil { snapshotter.countFailedLoad() }
        }
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

    /// Weights of the model's matrices and embeddings (norms and biases left out).
    public var parameterCount: Int {
        let c = model.configuration
        let attention = c.hiddenSize * c.headDim * (2 * c.numAttentionHeads + 2 * c.numKeyValueHeads)
        let ffn = 3 * c.hiddenSize * c.intermediateSize
        let embeddings = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)
        return c.numHiddenLayers * (attention + ffn) + embeddings
    }

    /// Seconds a step beside decode rows is planned to last now (nil without a latency target).
    var plannedStepSeconds: Double? { planner.stepTarget }

    /// Running and waiting request ids, engine thread only.
    public var runningRequestIds: [String] { running.map(\.job.requestId) }
    public var waitingRequestIds: [String] { waiting.map(\.job.requestId) }
}

/// The queue as the submitting threads see it between steps (published by the engine thread).
struct QueueOutlook: Sendable {
    var capacity = SchedulerSettings.capacityCeiling
    var freeSlots = 0
    /// The waiting requests' places in line (see `StepPlanner.priority`), ascending.
    var waitingPriorities: [Double] = []
    /// The places in line of running requests that have not produced a token yet (a request
    /// ahead of them in line may displace them).
    var displaceablePriorities: [Double] = []
    /// Seconds between two requests ending (a running slot freeing), nil before two have ended.
    var secondsBetweenEnds: Double?
    var overloadedSince: Double?
    /// p95 of the latest intervals between decode steps; 0 when nothing runs.
    var intervalP95 = 0.0

    /// Seconds a request waits for a running slot behind `ahead` waiting requests when `slots`
    /// slots are free or can be taken (nil: no estimate yet).
    func predictedWait(ahead: Int, slots: Int) -> Double? {
        if ahead < slots { return 0 }
        return secondsBetweenEnds.map { Double(ahead - slots + 1) * $0 }
    }

    /// The wait a new prompt of `promptTokens` is predicted for the tier router. As
    /// `predictedWait(promptTokens:)`, except that free slots count only while nothing waits
    /// (requests still waiting after a step beside free slots are held back by the step's decode
    /// budget or the KV cache, and so would a new one be), and before two requests have ended each
    /// one ahead counts `perRequest` seconds.
    func routingWait(promptTokens: Int, perRequest: Double) -> Double {
        let mine = Double(promptTokens)
        let ahead = waitingPriorities.prefix { $0 <= mine }.count
        let free = waitingPriorities.isEmpty ? freeSlots : 0
        let slots = free + displaceablePriorities.filter { $0 > mine }.count
        if ahead < slots { return 0 }
        return Double(ahead - slots + 1) * (secondsBetweenEnds ?? perRequest)
    }

    /// The wait of the last request in line (whether the queue is overloaded).
    var tailWait: Double? { predictedWait(ahead: waitingPriorities.count, slots: freeSlots) }

    /// The predicted wait of a new prompt of `promptTokens`: behind the waiting requests that come
    /// before it in line, with the free slots and those of running requests it would displace.
    func predictedWait(promptTokens: Int) -> Double? {
        let mine = Double(promptTokens)
        let ahead = waitingPriorities.prefix { $0 <= mine }.count
        return predictedWait(ahead: ahead, slots: freeSlots + displaceablePriorities.filter { $0 > mine }.count)
    }
}
