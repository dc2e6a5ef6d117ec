// One prompt in, a stream of token ids out: chunked prefill, then decoding one token per step until
// a stop token, the token limit, the context limit, cancellation or the caller says stop. Token
// ids only: the text layer (detokenizing, stop strings) lives in the caller's `onToken`.
import Foundation
import Tensor

public struct GenerationParameters: Sendable {
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// End-of-turn ids; the stop token itself is not reported through `onToken`.
    public var stopTokenIds: Set<Int>
    /// Prompt tokens per prefill step (bounds the scratch and the step time).
    public var prefillChunk: Int

    public init(
        maxTokens: Int = 256, sampling: SamplingParameters = SamplingParameters(),
        stopTokenIds: Set<Int> = [], prefillChunk: Int = 256
    ) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.prefillChunk = prefillChunk
    }
}

public enum StopReason: Sendable, Equatable, CustomStringConvertible {
    case stopToken(Int), maxTokens, contextLimit, cancelled, requested

    public var description: String {
        switch self {
        case .stopToken(let t): "stop token \(t)"
        case .maxTokens: "max tokens"
        case .contextLimit: "context limit"
        case .cancelled: "cancelled"
        case .requested: "stop requested"
        }
    }
}

/// What `onToken` tells the generator: go on, or stop here (e.g. a stop string was seen).
public enum GenerationControl: Sendable { case proceed, stop }

public struct GenerationStats: Sendable, Codable {
    public var promptTokens = 0
    /// Prompt tokens found already cached in a reused sequence (not recomputed).
    public var reusedPromptTokens = 0
    public var generatedTokens = 0
    public var promptSeconds = 0.0
    public var generationSeconds = 0.0

    /// Prompt tokens computed per second (reused ones excluded).
    public var promptTokensPerSecond: Double {
        promptSeconds > 0 ? Double(promptTokens - reusedPromptTokens) / promptSeconds : 0
    }
    /// Decoding speed: tokens after the first, per second of decode steps.
    public var generatedTokensPerSecond: Double {
        generationSeconds > 0 ? Double(max(generatedTokens - 1, 0)) / generationSeconds : 0
    }
}

public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var stopReason: StopReason
    public var stats: GenerationStats
}

/// Drives one sequence through a model. Not reentrant (the model is not): one generation at a time
/// per model; the server's scheduler batches many sequences through `Model.forward` instead.
public final class Generator: @unchecked Sendable {
    public let model: Model
    public let cache: KVCache

    public init(model: Model, cache: KVCache) {
        self.model = model
        self.cache = cache
    }

    /// Generates a continuation of `prompt`. With `sequence`, reuses its cached tokens that match
    /// the start of the prompt (chat history) and leaves it holding prompt + reply; without, uses
    /// a fresh sequence released at the end. `isCancelled` is polled between steps.
    public func generate(
        prompt: [Int], parameters: GenerationParameters, sequence: KVSequence? = nil,
        isCancelled: () -> Bool = { false },
        onToken: (Int) -> GenerationControl = { _ in .proceed }
    ) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw InferenceError.invalidBatch("empty prompt") }
        try parameters.sampling.validate()
        guard parameters.maxTokens >= 0, parameters.prefillChunk > 0 else {
            throw InferenceError.invalidConfiguration("maxTokens must be >= 0 and prefillChunk > 0")
        }
        let seq = sequence ?? cache.makeSequence()
        defer { if sequence == nil { cache.release(seq) } }

        // Reuse the cached common prefix, but recompute at least the last prompt token (its logits).
        var common = 0
        let cached = seq.tokens
        while common < min(cached.count, prompt.count - 1) && cached[common] == prompt[common] { common += 1 }
        common = cache.truncate(seq, to: common)

        var stats = GenerationStats()
        stats.promptTokens = prompt.count
        stats.reusedPromptTokens = common
        var sampler = Sampler(parameters: parameters.sampling)
        sampler.observe(prompt)

        let clock = ContinuousClock()
        let promptStart = clock.now
        var next = 0
        var position = common
        while position < prompt.count {
            if isCancelled() {
                return GenerationResult(tokens: [], stopReason: .cancelled, stats: stats)
            }
            let end = min(prompt.count, position + parameters.prefillChunk)
            let last = end == prompt.count
            let logits = try model.forward([
                SequenceInput(
                    sequence: seq, tokens: Array(prompt[position..<end]),
                    logits: last ? .last : .none)
            ])
            if last, parameters.maxTokens > 0 { next = sampler.sample(logits.last(entry: 0)!) }
            position = end
        }
        stats.promptSeconds = seconds(clock.now - promptStart)

        var tokens: [Int] = []
        var reason = StopReason.maxTokens
        let decodeStart = clock.now
        var firstTokenTime = decodeStart
        while tokens.count < parameters.maxTokens {
            if parameters.stopTokenIds.contains(next) { reason = .stopToken(next); break }
            tokens.append(next)
            if tokens.count == 1 { firstTokenTime = clock.now }
            sampler.observe(next)
            if onToken(next) == .stop { reason = .requested; break }
            if tokens.count == parameters.maxTokens { break }
            if isCancelled() { reason = .cancelled; break }
            if seq.length + 1 > cache.contextLength { reason = .contextLimit; break }
            let logits = try model.forward([SequenceInput(sequence: seq, tokens: [next], logits: .last)])
            next = sampler.sample(logits.last(entry: 0)!)
        }
        stats.generatedTokens = tokens.count
        stats.generationSeconds = tokens.isEmpty ? 0 : seconds(clock.now - firstTokenTime)
        return GenerationResult(tokens: tokens, stopReason: reason, stats: stats)
    }

    /// The same as an async stream of token ids; cancelling the consuming task (or dropping the
    /// stream) stops generation at the next step. Runs on its own thread (the forward pass blocks).
    public func stream(prompt: [Int], parameters: GenerationParameters) -> AsyncThrowingStream<Int, Error> {
        AsyncThrowingStream { continuation in
            let cancelled = CancelFlag()
            continuation.onTermination = { _ in cancelled.set() }
            let thread = Thread { [self] in
                do {
                    _ = try generate(prompt: prompt, parameters: parameters, isCancelled: { cancelled.isSet }) { token in
                        continuation.yield(token)
                        return .proceed
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
    }
}

/// A flag set from any thread (signal handler queue, stream termination) and polled between steps.
public final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    public func set() { lock.lock(); value = true; lock.unlock() }
    public func reset() { lock.lock(); value = false; lock.unlock() }
}

func seconds(_ d: Duration) -> Double {
    let c = d.components
    return Double(c.seconds) + Double(c.attoseconds) * 1e-18
}
