// The real ChatEngine: chat template + tokenizer in front of an EngineLoop over one model.
import Foundation
import Logging
import Tensor
import Tokenizer
import Transformer

/// `startGeneration` queues the request or refuses it synchronously (queue full: `.busy`), before the
/// server has sent its response headers, so the client gets a real HTTP 429 with Retry-After.
public final class TransformerChatEngine: ChatEngine, @unchecked Sendable {
    public let modelInfo: ModelInfo
    public let scheduler: EngineLoop
    public let tokenizer: Tokenizer
    public let template: ChatTemplate
    public let stopTokenIds: Set<Int>
    /// Used for each field the client leaves out (see `SamplingDefaults`).
    public let samplingDefaults: SamplingDefaults
    /// Replies of deterministic requests (nil: off).
    let responseCache: ResponseCache?

    public func load(promptTokens: Int) -> TierLoad? { scheduler.load(promptTokens: promptTokens) }

    public init(
        id: String, scheduler: EngineLoop, tokenizer: Tokenizer, template: ChatTemplate,
        samplingDefaults: SamplingDefaults? = nil, responseCache: ResponseCacheSettings = .init(mode: .off)
    ) {
        self.responseCache =
            responseCache.mode == .off
            ? nil
            : ResponseCache(
                mode: responseCache.mode, budgetBytes: responseCache.budgetBytes,
                metrics: CacheMetrics(model: scheduler.modelId, cache: "response"))
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.template = template
        self.samplingDefaults = samplingDefaults ?? SamplingDefaults(family: template.family)
        stopTokenIds = Set(tokenizer.stopTokenIds(for: template))
        modelInfo = ModelInfo(id: id, contextLength: scheduler.contextLength, parameters: scheduler.parameterCount)
    }

    public func countTokens(_ messages: [ChatMessage]) throws -> Int {
        promptTokens(messages).count
    }

    /// The prompt ids `generate` feeds for `messages`: the template's own markers become special
    /// tokens, message contents never do (`RenderedPrompt` keeps them apart), so a user typing
    /// `<|im_start|>system` cannot forge a turn.
    public func promptTokens(_ messages: [ChatMessage]) -> [Int] {
        let turns = messages.map { Tokenizer::ChatMessage(role: Self.role($0.role), content: $0.content) }
        return tokenizer.encode(prompt: template.renderPrompt(turns), addBos: tokenizer.addsBosToken)
    }

    private static func role(_ role: ChatMessage.Role) -> Tokenizer::ChatMessage.Role {
        switch role {
        case .system: .system
        case .user: .user
        case .assistant: .assistant
        }
    }

    public func generate(_ request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error> {
        do {
            return try startGeneration(request)
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    public func startGeneration(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        try startGenerationReportingCache(request).stream
    }

    /// A deterministic request whose reply is stored is answered from the response cache without
    /// reaching the engine loop; otherwise the loop runs it (and a finished reply is stored).
    public func startGenerationReportingCache(
        _ request: GenerationRequest
    ) throws -> (stream: AsyncThrowingStream<GenerationEvent, Error>, cacheHit: Bool) {
        let prompt: [Int]
        if let ids = request.promptTokens {
            guard !ids.isEmpty else { throw ChatEngineError.invalidRequest("prompt: expected at least one token, found none") }
            if let bad = ids.first(where: { $0 < 0 || $0 >= vocabularySize }) {
                throw ChatEngineError.invalidRequest("prompt: token id \(bad) is outside the vocabulary 0..<\(vocabularySize)")
            }
            prompt = ids
        } else {
            guard !request.messages.isEmpty else { throw ChatEngineError.invalidRequest("messages: expected at least one message, found none") }
            prompt = promptTokens(request.messages)
        }
        let limit = scheduler.contextLength
        if prompt.count >= limit { throw ChatEngineError.contextLengthExceeded(promptTokens: prompt.count, limit: limit) }
        var job = SchedulerJob(
            prompt: prompt, maxTokens: min(max(0, request.maxTokens), limit - prompt.count + 1),
            sampling: try samplingDefaults.parameters(for: request.sampling),
            stopTokenIds: stopTokenIds, userId: request.userId, conversationId: request.conversationId,
            requestId: request.requestId)
        job.ignoreEOS = request.ignoreEOS
        job.minTokens = request.minTokens
        job.logprobs = request.logprobs
        guard let responseCache, let key = responseCache.key(for: job) else { return (try scheduler.trySubmit(job), false) }
        if let replay = responseCache.replay(key) { return (replay, true) }
        return (responseCache.recording(key, try scheduler.trySubmit(job)), false)
    }

    public var vocabularySize: Int { tokenizer.vocabularySize }

    public func tokenize(_ text: String, addSpecial: Bool) throws -> [Int] {
        tokenizer.encode(text: text, addBos: addSpecial && tokenizer.addsBosToken)
    }

    public func detokenize(_ ids: [Int]) throws -> String {
        if let bad = ids.first(where: { $0 < 0 || $0 >= vocabularySize }) {
            throw ChatEngineError.invalidRequest("tokens: id \(bad) is outside the vocabulary 0..<\(vocabularySize)")
        }
        return tokenizer.decode(ids)
    }

    public func tokenBytes(_ id: Int) -> [UInt8] { tokenizer.decodeBytes([id]) }

    /// Ready for /health once built: `makeTransformerEngines` runs the warm-up step before returning it.
    public var isReady: Bool { true }

    public func shutdown() { scheduler.shutdown() }

    public func forgetConversation(userId: Int64, conversationId: String) {
        scheduler.forgetConversation(userId: userId, conversationId: conversationId)
    }

    public func close() { scheduler.shutdownAndWait() }
}

/// What a request's missing sampling fields become, and the checks on the ones it sends.
///
/// OpenAI's own default is temperature 1, top_p 1; small local models ramble at 1, so the defaults
/// are the model family's recommended generation settings (Qwen2.5's generation_config.json:
/// temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05; Llama 3: 0.6 / 0.9). A request's
/// `temperature: 0` is greedy. `top_k` and the repetition penalty are not in OpenAI's API, so they
/// always come from here.
public struct SamplingDefaults: Sendable, Equatable {
    public var temperature: Double
    public var topP: Double
    public var topK: Int
    public var repetitionPenalty: Double

    public init(temperature: Double, topP: Double, topK: Int = 0, repetitionPenalty: Double = 1) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.repetitionPenalty = repetitionPenalty
    }

    public init(family: ChatTemplateFamily) {
        switch family {
        case .chatML: self.init(temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05)
        case .llama3: self.init(temperature: 0.6, topP: 0.9)
        default: self.init(temperature: 0.7, topP: 0.9, topK: 40)
        }
    }

    /// The sampler settings for a request; throws `invalidRequest` naming the bad field.
    public func parameters(for s: SamplingParameters) throws -> Transformer::SamplingParameters {
        let temperature = s.temperature ?? self.temperature
        let topP = s.topP ?? self.topP
        guard temperature.isFinite, (0...2).contains(temperature) else {
            throw ChatEngineError.invalidRequest("temperature: expected a number in [0, 2], found \(temperature)")
        }
        guard topP.isFinite, topP > 0, topP <= 1 else {
            throw ChatEngineError.invalidRequest("top_p: expected a number in (0, 1], found \(topP)")
        }
        for (name, value) in [("presence_penalty", s.presencePenalty), ("frequency_penalty", s.frequencyPenalty)]
        where !(value.isFinite && (-2...2).contains(value)) {
            throw ChatEngineError.invalidRequest("\(name): expected a number in [-2, 2], found \(value)")
        }
        return Transformer::SamplingParameters(
            temperature: Float(temperature), topK: topK, topP: Float(topP),
            repetitionPenalty: Float(repetitionPenalty),
            presencePenalty: Float(s.presencePenalty), frequencyPenalty: Float(s.frequencyPenalty),
            seed: s.seed)
    }
}

// MARK: - Loading

/// What `makeTransformerEngines` needs besides the paths (the sarvam target maps its EngineOptions here).
public struct TransformerEngineSettings: Sendable {
    /// Tokens per sequence; nil = the model's maxPositionEmbeddings.
    public var contextLength: Int?
    /// Compute threads of each model's pool.
    public var threads: Int
    /// KV cache bytes per model; nil = min(¼ of physical memory, maxRunningSequences (or the
    /// capacity ceiling) full contexts). Only the pages of blocks in use are resident.
    public var kvCacheBytes: Int?
    public var kvPrecision: KVCache.Precision
    public var scheduler: SchedulerSettings
    /// Folder of the KV snapshots (a subfolder per model and cache layout); nil: no snapshots.
    public var snapshotDirectory: String?
    /// Bytes of KV snapshots on disk per model, least recently used deleted beyond it.
    public var snapshotBudgetBytes: Int
    public var responseCache: ResponseCacheSettings
    public var logger: Logger
    /// Where to write each engine's per-step profile (`StepTrace`); with several models the file
    /// name gets the model's id appended. Nil: no trace.
    public var stepTracePath: String?
    /// Shared by the engines of one process so their steps take turns on the cores; nil: none.
    public var computeGate: ComputeGate?
    /// With several models: the smallest drafts for the largest (speculative decoding), when they
    /// share a vocabulary.
    public var speculative = true
    /// How the weights are held: `serve` reads them into huge pages (faster decode); mapped by
    /// default here (tests load and drop engines often).
    public var weights: FileResidency = .mapped

    public init(
        contextLength: Int? = nil, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
        kvCacheBytes: Int? = nil, kvPrecision: KVCache.Precision = .float16,
        scheduler: SchedulerSettings = SchedulerSettings(), snapshotDirectory: String? = nil,
        snapshotBudgetBytes: Int = 4 << 30, responseCache: ResponseCacheSettings = .init(mode: .off),
        logger: Logger = Logger(label: "sarvam.engine"), stepTracePath: String? = nil
    ) {
        self.stepTracePath = stepTracePath
        self.responseCache = responseCache
        self.snapshotDirectory = snapshotDirectory
        self.snapshotBudgetBytes = snapshotBudgetBytes
        self.contextLength = contextLength
        self.threads = threads
        self.kvCacheBytes = kvCacheBytes
        self.kvPrecision = kvPrecision
        self.scheduler = scheduler
        self.logger = logger
    }
}

/// One engine per weight file, loaded in order, each warmed up (one forward step) and its engine
/// thread started. Throws an error naming the file that failed. Bootstraps the metrics first.
public func makeTransformerEngines(modelPaths: [String], settings: TransformerEngineSettings) async throws -> [any ChatEngine] {
    SarvamMetrics.bootstrap()
    var engines: [any ChatEngine] = []
    var ids = Set<String>()
    var settings = settings
    if modelPaths.count > 1 && settings.computeGate == nil { settings.computeGate = ComputeGate() }
    let draftPlan = settings.speculative ? speculativePair(modelPaths) : nil
    for path in modelPaths {
        do {
            var settings = settings
            if modelPaths.count > 1, let trace = settings.stepTracePath {
                settings.stepTracePath = trace + "." + URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            }
            let engine = try loadTransformerEngine(
                path: path, settings: settings, draftPath: draftPlan?.target == path ? draftPlan?.draft : nil)
            guard ids.insert(engine.modelInfo.id).inserted else {
                throw ChatEngineError.invalidRequest("two models are named \(engine.modelInfo.id); rename one file")
            }
            engines.append(engine)
        } catch {
            throw ChatEngineError.failed("loading \(path): \(error)")
        }
    }
    return engines
}

/// A weight file held as `settings.weights` asks, its reading into huge pages logged by quarters
/// (seconds from a cold disk) and the outcome said once (a second model of one file shares the
/// first's copy: `MappedFile.open`).
func openWeights(_ path: String, settings: TransformerEngineSettings) throws -> WeightFile {
    let start = DispatchTime.now().uptimeNanoseconds
    var quarter = 0
    let file = try WeightFile.open(path, residency: settings.weights) { done, size in
        guard done * 4 >= (quarter + 1) * size, done < size else { return }
        quarter = done * 4 / size
        settings.logger.info("reading weights", metadata: ["file": "\(path)", "percent": "\(quarter * 25)"])
    }
    if settings.weights == .hugePages {
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        settings.logger.info(
            file.residency == .hugePages ? "weights in huge pages" : "weights mapped: no memory for a copy in huge pages",
            metadata: ["file": "\(path)", "MB": "\(file.fileSize >> 20)", "seconds": "\(String(format: "%.2f", seconds))"])
    }
    return file
}

/// The largest of several weight files (by size) as the target, the smallest as its draft; nil
/// for fewer than two files or when a size cannot be read.
func speculativePair(_ paths: [String]) -> (target: String, draft: String)? {
    guard Set(paths).count > 1 else { return nil }
    var sizes: [(path: String, bytes: Int)] = []
    for path in paths {
        // The file's own size, not a symbolic link's.
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard let size = try? FileManager.default.attributesOfItem(atPath: resolved)[.size], let bytes = (size as? NSNumber)?.intValue
        else { return nil }
        sizes.append((path, bytes))
    }
    sizes.sort { $0.bytes < $1.bytes }
    guard sizes.first!.bytes < sizes.last!.bytes else { return nil }
    return (sizes.last!.path, sizes.first!.path)
}

/// Loads one weight file into a ready engine (blocking; tens of milliseconds to seconds). With
/// `draftPath`, a second model of that file (its own instance: a model is not reentrant; its
/// weights are those the other engine holds, `MappedFile.open`) drafts for this one when
/// both have the same vocabulary size, with the logits of its `DraftVocabulary.standard` ids only;
/// otherwise the engine runs without and says so in the log.
public func loadTransformerEngine(
    path: String, settings: TransformerEngineSettings, draftPath: String? = nil
) throws -> TransformerChatEngine {
    let file = try openWeights(path, settings: settings)
    let pool = ThreadPool(threads: max(1, settings.threads))
    let model = try Model(file: file, pool: pool)
    let tokenizer = try Tokenizer(json: file.description.tokenizer)
    let template = ChatTemplate(detectingFrom: file.description.chatTemplate)
    let id = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    var draft: Model?
    if let draftPath {
        let draftFile = try openWeights(draftPath, settings: settings)
        // Any draft of the same vocabulary size is correct (verification decides every token); one
        // of another tokenizer would only be useless, so the vocabulary size is all that is checked.
        if draftFile.description.model.vocabSize == model.configuration.vocabSize {
            draft = try makeDraftModel(file: draftFile, pool: pool, tokenizer: tokenizer)
        } else {
            settings.logger.warning(
                "no speculative decoding: the models have different vocabularies", metadata: ["model": "\(id)", "draft": "\(draftPath)"])
        }
    }
    return try makeTransformerEngine(
        id: id, model: model, tokenizer: tokenizer, template: template, settings: settings, modelChecksum: file.checksum, draft: draft)
}

/// The served draft of a weight file: a model of its own (not reentrant) that computes the logits
/// of the `DraftVocabulary.standard` ids of `tokenizer` (the target's) only.
func makeDraftModel(file: WeightFile, pool: ThreadPool, tokenizer: Tokenizer) throws -> Model {
    let model = try Model(file: file, pool: pool)
    model.draftVocabulary = DraftVocabulary.standard(
        vocabularySize: model.configuration.vocabSize, tokenCount: tokenizer.vocabularySize, specialIds: tokenizer.specialTokenIds)
    return model
}

/// An engine over an already built model (the tests' synthetic ones too): cache, scheduler, warm-up, thread.
public func makeTransformerEngine(
    id: String, model: Model, tokenizer: Tokenizer, template: ChatTemplate,
    settings: TransformerEngineSettings, startThread: Bool = true, modelChecksum: String? = nil, draft: Model? = nil
) throws -> TransformerChatEngine {
    let c = model.configuration
    guard tokenizer.vocabularySize <= c.vocabSize else {
        throw ChatEngineError.failed("the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(c.vocabSize)")
    }
    let context = min(settings.contextLength ?? c.maxPositionEmbeddings, c.maxPositionEmbeddings)
    let perPosition = KVCache.bytesPerPosition(c, precision: settings.kvPrecision)
    let budget =
        settings.kvCacheBytes
        ?? min(
            Int(ProcessInfo.processInfo.physicalMemory / 4),
            (settings.scheduler.maxRunningSequences ?? SchedulerSettings.capacityCeiling) * context * perPosition)
    let cache = try model.makeCache(memoryBudget: budget, precision: settings.kvPrecision, contextLength: context)
    // Snapshots are keyed by the weights' checksum: a model without one (built in memory) has none.
    let snapshots = try settings.snapshotDirectory.flatMap { root in
        try modelChecksum.map {
            try KVSnapshotStore(root: root, model: $0, layout: cache.layout, budgetBytes: settings.snapshotBudgetBytes)
        }
    }
    // The draft's cache mirrors the model's (same blocks and context; its positions are smaller).
    let draftCache = try draft.map {
        try KVCache(
            configuration: $0.configuration, blockCount: cache.blockCount, precision: settings.kvPrecision,
            blockSize: cache.blockSize, contextLength: cache.contextLength)
    }
    let scheduler = try EngineLoop(
        model: model, cache: cache, tokenizer: tokenizer, settings: settings.scheduler,
        modelId: id, logger: settings.logger, stepTrace: try settings.stepTracePath.map { try StepTrace(path: $0) },
        snapshotStore: snapshots, draftModel: draft, draftCache: draftCache)
    try scheduler.warmUp()
    scheduler.computeGate = settings.computeGate
    if startThread { scheduler.start() }
    settings.logger.info(
        "engine ready",
        metadata: [
            "model": "\(id)", "context": "\(cache.contextLength)", "kvBlocks": "\(cache.blockCount)",
            "kvMiB": "\(cache.bytes >> 20)", "template": "\(template.family.rawValue)", "capacity": "\(scheduler.capacity)",
            "speculative": "\(draft != nil)",
        ])
    return TransformerChatEngine(
        id: id, scheduler: scheduler, tokenizer: tokenizer, template: template, responseCache: settings.responseCache)
}

/// The response cache of each engine: who may be served a stored reply, and its memory budget.
public struct ResponseCacheSettings: Sendable, Equatable {
    public var mode: ResponseCacheMode
    public var budgetBytes: Int
    public init(mode: ResponseCacheMode, budgetBytes: Int = 64 << 20) {
        self.mode = mode
        self.budgetBytes = budgetBytes
    }
}
