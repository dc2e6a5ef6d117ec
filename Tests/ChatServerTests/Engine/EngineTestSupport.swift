// A synthetic model and tokenizer small enough for scheduler tests: random int8 weights (row-wise
// activation quantization makes a row's result independent of the other rows of the batch, so
// "batched equals alone" can be checked token for token), and a byte-level vocabulary in which
// every normal token is one ASCII character (text maps back to token ids one to one).
import Foundation
import Tensor
import Tokenizer
import Transformer
import XCTest
@testable import ChatServer

enum EngineFixture {
    /// Ids of the tiny vocabulary: 0..<94 = "!"..."~", 94 = " ", 95 = "\n", 96..98 = specials, 99 = "\t", 100 = "\r".
    static let endOfText = 96, imStart = 97, imEnd = 98
    static let vocabularySize = 101

    static func tokenizerDescription() -> TokenizerDescription {
        var tokens: [String] = (0x21...0x7E).map { String(UnicodeScalar(UInt8($0))) }
        tokens += ["\u{0120}", "\u{010A}", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "\u{0109}", "\u{010D}"]
        var types = [Int](repeating: 1, count: tokens.count)
        for id in [endOfText, imStart, imEnd] { types[id] = 3 }
        return TokenizerDescription(
            kind: .byteLevelBPE, preTokenizer: "qwen2", tokens: tokens, tokenTypes: types,
            eosTokenId: endOfText, endOfTurnTokenIds: [imEnd, endOfText])
    }

    static let tokenizer: Tokenizer = {
        do { return try Tokenizer(description: tokenizerDescription()) } catch {
            preconditionFailure("the test tokenizer description is invalid: \(error)")
        }
    }()

    static func configuration(maxPositions: Int = 512) -> ModelConfiguration {
        ModelConfiguration(
            architecture: .qwen2, numHiddenLayers: 2, hiddenSize: 64, numAttentionHeads: 4,
            numKeyValueHeads: 2, headDim: 16, intermediateSize: 96, vocabSize: vocabularySize,
            ropeTheta: 1_000_000, ropeLayout: .halves, rmsNormEps: 1e-6,
            maxPositionEmbeddings: maxPositions, tieWordEmbeddings: false, attentionBias: true)
    }

    static func model(seed: UInt64 = 3, threads: Int = 2, maxPositions: Int = 512) throws -> Model {
        let c = configuration(maxPositions: maxPositions)
        let weights = try ModelWeights(configuration: c, floatTensors: ModelWeights.syntheticTensors(c, seed: seed), format: .int8)
        return try Model(configuration: c, weights: weights, pool: ThreadPool(threads: threads))
    }

    /// Random prompt ids among the normal tokens.
    static func prompt(_ count: Int, seed: UInt64) -> [Int] {
        var rng = SamplingRNG(seed: seed)
        return (0..<count).map { _ in Int(rng.next() % 94) }
    }

    /// Greedy tokens of `prompt` generated alone (no scheduler, fresh cache): the reference.
    static func alone(
        _ model: Model, prompt: [Int], maxTokens: Int, stop: Set<Int> = [], contextLength: Int? = nil,
        blockSize: Int = 4, sampling: Transformer::SamplingParameters = .greedy
    ) throws -> [Int] {
        let cache = try KVCache(
            configuration: model.configuration, blockCount: 1024, precision: .float16, blockSize: blockSize,
            contextLength: contextLength)
        let result = try Generator(model: model, cache: cache).generate(
            prompt: prompt, parameters: GenerationParameters(maxTokens: maxTokens, sampling: sampling, stopTokenIds: stop, prefillChunk: 7))
        return result.tokens
    }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0.0
    private var tick = 0.0
    /// Each reading moves the clock by `tick` afterwards (a step that "takes" time).
    var now: Double {
        lock.withLock {
            defer { value += tick }
            return value
        }
    }
    func advance(_ seconds: Double) { lock.withLock { value += seconds } }
    func setTick(_ seconds: Double) { lock.withLock { tick = seconds } }
    var function: @Sendable () -> Double { { [self] in now } }
}

/// Collects what the engine thread reports (tokens) for checks from the test.
final class TokenLog: @unchecked Sendable {
    private let lock = NSLock()
    private var tokens: [String: [Int]] = [:]
    func append(_ id: String, _ token: Int) { lock.withLock { tokens[id, default: []].append(token) } }
    subscript(_ id: String) -> [Int] { lock.withLock { tokens[id] ?? [] } }
}

/// Everything a scheduler test needs: the scheduler (never started: the test calls `step()`), its
/// model, cache, clock and token log.
struct SchedulerHarness {
    let model: Model
    let scheduler: EngineLoop
    let clock = ManualClock()
    let log = TokenLog()
    var cache: KVCache { scheduler.cache }

    init(
        settings: SchedulerSettings, blocks: Int = 256, blockSize: Int = 4, contextLength: Int? = nil, model: Model? = nil,
        stepTrace: StepTrace? = nil, snapshotStore: KVSnapshotStore? = nil, draft: Model? = nil
    ) throws {
        let model = try model ?? EngineFixture.model()
        self.model = model
        let cache = try KVCache(
            configuration: model.configuration, blockCount: blocks, precision: .float16,
            blockSize: blockSize, contextLength: contextLength)
        let draftCache = try draft.map {
            try KVCache(
                configuration: $0.configuration, blockCount: blocks, precision: .float16, blockSize: blockSize,
                contextLength: cache.contextLength)
        }
        scheduler = try EngineLoop(
            model: model, cache: cache, tokenizer: EngineFixture.tokenizer, settings: settings,
            modelId: "tiny-\(UUID().uuidString.prefix(8))", stepTrace: stepTrace, now: clock.function, snapshotStore: snapshotStore,
            draftModel: draft, draftCache: draftCache)
    }

    /// A greedy job named `id` whose tokens land in `log[id]`.
    func job(
        _ id: String, prompt: [Int], maxTokens: Int, user: Int64 = 0, conversation: String? = nil, stop: Set<Int> = []
    ) -> SchedulerJob {
        let log = self.log
        return SchedulerJob(
            prompt: prompt, maxTokens: maxTokens, sampling: .greedy, stopTokenIds: stop, userId: user,
            conversationId: conversation, requestId: id, onToken: { log.append(id, $0) })
    }

    /// Steps until nothing runs or waits (at most `limit` steps), returning the reports.
    @discardableResult
    func runToCompletion(limit: Int = 500) -> [StepReport] {
        var reports: [StepReport] = []
        for _ in 0..<limit {
            let report = scheduler.step()
            clock.advance(0.01)
            reports.append(report)
            if scheduler.runningRequestIds.isEmpty && scheduler.waitingRequestIds.isEmpty && scheduler.activeRequestCount == 0 { break }
        }
        return reports
    }
}

/// All events of a finished stream (or the error that ended it).
func collect(_ stream: AsyncThrowingStream<GenerationEvent, Error>) async -> (events: [GenerationEvent], error: Error?) {
    var events: [GenerationEvent] = []
    do {
        for try await e in stream { events.append(e) }
        return (events, nil)
    } catch {
        return (events, error)
    }
}

/// A metric's value for a model: the first sample line of `name{model="…"` holding `label` (0 if none).
func metricValue(_ name: String, model: String, label: String = "") -> Double {
    let line = SarvamMetrics.render().split(separator: "\n").first {
        $0.hasPrefix("\(name){model=\"\(model)\"") && (label.isEmpty || $0.contains(label))
    }
    return line.flatMap { Double($0.split(separator: " ").last!) } ?? 0
}
