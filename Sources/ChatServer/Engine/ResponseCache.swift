// Replies to deterministic requests (temperature 0, or a given seed), kept in memory and served
// again without running the model. One cache per engine, so per model; the key is everything that
// decides the reply's tokens: the exact prompt tokens, every sampling parameter, the token limit
// and the stop tokens, and (unless shared) the user. Only replies that finished (end of turn or the
// limit) are stored: a stopped, cancelled or failed one never is. Bounded in bytes, least recently
// used dropped first. Thread-safe.
import Foundation
import Transformer

/// Who may be served a stored reply.
public enum ResponseCacheMode: String, Sendable, CaseIterable {
    /// Never cache.
    case off
    /// A user's own requests only.
    case user
    /// Any user's identical request.
    case global
}

final class ResponseCache: @unchecked Sendable {
    struct Key: Hashable {
        /// The user, or nil when shared.
        var user: Int64?
        var prompt: [Int]
        var temperature: Float
        var topK: Int
        var topP: Float
        var repetitionPenalty: Float
        var presencePenalty: Float
        var frequencyPenalty: Float
        var seed: UInt64?
        var maxTokens: Int
        var stopTokenIds: [Int]
        var ignoreEOS: Bool
        var minTokens: Int
    }

    /// A stored reply: the engine's events after the prompt, as they were streamed.
    struct Reply {
        var texts: [(text: String, tokens: Int)]
        var reason: FinishReason
        var usage: GenerationUsage
        var bytes: Int
        var lastUsed: UInt64
    }

    let mode: ResponseCacheMode
    let budgetBytes: Int
    private let metrics: CacheMetrics
    private let lock = NSLock()
    private var replies: [Key: Reply] = [:]
    private var bytes = 0
    private var clock: UInt64 = 0

    init(mode: ResponseCacheMode, budgetBytes: Int, metrics: CacheMetrics) {
        self.mode = mode
        self.budgetBytes = max(0, budgetBytes)
        self.metrics = metrics
    }

    /// The key of a job, or nil when its reply may not be cached (sampled without a seed, asking for
    /// log-probabilities, which are not stored, or off).
    func key(for job: SchedulerJob) -> Key? {
        guard mode != .off, budgetBytes > 0, job.logprobs == nil, job.sampling.temperature == 0 || job.sampling.seed != nil
        else { return nil }
        let s = job.sampling
        return Key(
            user: mode == .user ? job.userId : nil, prompt: job.prompt, temperature: s.temperature, topK: s.topK, topP: s.topP,
            repetitionPenalty: s.repetitionPenalty, presencePenalty: s.presencePenalty, frequencyPenalty: s.frequencyPenalty,
            seed: s.seed, maxTokens: job.maxTokens, stopTokenIds: job.stopTokenIds.sorted(),
            ignoreEOS: job.ignoreEOS, minTokens: job.minTokens)
    }

    /// The stored reply as a finished stream, or nil (a miss).
    func replay(_ key: Key) -> AsyncThrowingStream<GenerationEvent, Error>? {
        let reply: Reply? = lock.withLock {
            guard var r = replies[key] else { return nil }
            clock += 1
            r.lastUsed = clock
            replies[key] = r
            return r
        }
        guard let reply else {
            metrics.misses.increment()
            return nil
        }
        metrics.hits.increment()
        var usage = reply.usage
        usage.cachedResponse = true
        usage.cachedPromptTokens = usage.promptTokens
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        continuation.yield(.promptProcessed(promptTokens: key.prompt.count))
        for t in reply.texts { continuation.yield(.text(t.text, tokenCount: t.tokens)) }
        continuation.yield(.finished(reply.reason, usage))
        continuation.finish()
        return stream
    }

    /// Passes the engine's stream through, storing the reply under `key` when the consumer takes
    /// its finish: a consumer that stops reading earlier (a stop, a vanished client) stores nothing.
    func recording(_ key: Key, _ inner: AsyncThrowingStream<GenerationEvent, Error>) -> AsyncThrowingStream<GenerationEvent, Error> {
        let recorder = Recorder(inner.makeAsyncIterator())
        return AsyncThrowingStream { [self] in
            guard let event = try await recorder.iterator.next() else { return nil }
            switch event {
            case .text(let text, let tokens): recorder.texts.append((text, tokens))
            case .finished(let reason, let usage): store(key, texts: recorder.texts, reason: reason, usage: usage)
            case .promptProcessed, .logprobs: break
            }
            return event
        }
    }

    /// The engine stream being read, and the texts so far (one consumer pulls at a time).
    private final class Recorder: @unchecked Sendable {
        var iterator: AsyncThrowingStream<GenerationEvent, Error>.AsyncIterator
        var texts: [(text: String, tokens: Int)] = []
        init(_ iterator: AsyncThrowingStream<GenerationEvent, Error>.AsyncIterator) { self.iterator = iterator }
    }

    private func store(_ key: Key, texts: [(text: String, tokens: Int)], reason: FinishReason, usage: GenerationUsage) {
        let size = key.prompt.count * 8 + texts.reduce(0) { $0 + $1.text.utf8.count + 32 } + 256
        guard size <= budgetBytes else { return }
        lock.withLock {
            if let old = replies.removeValue(forKey: key) { bytes -= old.bytes }
            while bytes + size > budgetBytes, let oldest = replies.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                replies[oldest.key] = nil
                bytes -= oldest.value.bytes
                metrics.evictions.increment()
            }
            clock += 1
            replies[key] = Reply(texts: texts, reason: reason, usage: usage, bytes: size, lastUsed: clock)
            bytes += size
            metrics.bytes.record(bytes)
        }
    }

    var storedBytes: Int { lock.withLock { bytes } }
}
