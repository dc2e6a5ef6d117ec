// The draft side of speculative decoding inside an engine loop: a small model of the same
// vocabulary with its own KV cache and one draft sequence per running request. In a step, before
// the target's forward, it (1) feeds each prefilling request's new prompt tokens to the draft too
// (so the draft is caught up when decoding starts), and (2) proposes k tokens for each decoding
// request chosen to speculate: one batched draft forward per draft position. After the target has
// verified, each draft sequence is cut back to the tokens that were kept.
//
// A draft sequence holds a prefix of the request's tokens (never an unverified one after `settle`);
// with prefix caching its full blocks are published like the target's, so a conversation's next turn
// finds its draft prefix cached too. Engine thread only.
import Logging
import Transformer

final class SpeculativeDraft {
    let model: Model
    let cache: KVCache
    let prefixCaching: Bool
    /// A draft step's cost as a fraction of a target step (ratio of weight bytes read per token).
    let draftCost: Double
    /// Speculation runs in steps with at most this many decoding requests: beyond, the target's
    /// batched step is compute-bound and k extra rows per request cost more than they save.
    let maxStreams: Int
    /// Tokens a lagging draft sequence (its prefix came from the target's cache or a snapshot) is
    /// fed per step beside its other work.
    static let catchUpTokens = 64
    private let logger: Logger

    init(model: Model, cache: KVCache, target: Model, prefixCaching: Bool, maxStreams: Int = 8, logger: Logger) throws {
        guard model.configuration.vocabSize == target.configuration.vocabSize else {
            throw ChatEngineError.failed(
                "the draft model has \(model.configuration.vocabSize) tokens, the target \(target.configuration.vocabSize): "
                    + "speculative decoding needs one vocabulary")
        }
        self.model = model
        self.cache = cache
        self.prefixCaching = prefixCaching
        self.maxStreams = maxStreams
        self.logger = logger
        draftCost = SpeculativeGenerator.draftCost(target: target, draft: model)
    }

    /// Seconds of one draft forward pass over a step's speculating requests, an exponential
    /// average of the measured runs (nil before the first).
    private(set) var passSeconds: Double?

    /// Records a `run` that made `passes` forward passes in `seconds` (the first pass also feeds
    /// prompt chunks and catch-up tokens; that share is small beside the passes).
    func recordPasses(_ passes: Int, seconds: Double) {
        guard passes > 0, seconds.isFinite, seconds > 0 else { return }
        let one = seconds / Double(passes)
        passSeconds = passSeconds.map { $0 + 0.2 * (one - $0) } ?? one
    }

    /// The request's draft sequence, made (after the longest cached prefix) when missing.
    private func sequence(for r: EngineRequest) -> KVSequence {
        if let s = r.draftSequence { return s }
        let s = cache.makeSequence()
        if prefixCaching { cache.attachCachedPrefix(s, tokens: r.tokens) }
        r.draftSequence = s
        return s
    }

    /// Feeds prefilling requests' prompt chunks (`prefill`: the request and the tokens the target
    /// feeds it this step) and drafts up to `k` tokens for each decoding request of `decoding`.
    /// Returns the drafts by request id (a request caught up first, or on a draft failure, has none).
    func run(prefill: [(request: EngineRequest, tokens: Int)], decoding: [(request: EngineRequest, k: Int)]) -> [UInt64: [Int]] {
        var inputs: [SequenceInput] = []
        var proposing: [(request: EngineRequest, k: Int, entry: Int)] = []
        for (r, n) in prefill {
            let s = sequence(for: r)
            let end = min(r.sequence.length + n, s.length + n + Self.catchUpTokens)
            if end > s.length { inputs.append(SequenceInput(sequence: s, tokens: Array(r.tokens[s.length..<end]), logits: .none)) }
        }
        for (r, k) in decoding {
            let s = sequence(for: r)
            let backlog = r.tokens.count - s.length
            if backlog > Self.catchUpTokens {
                let chunk = Array(r.tokens[s.length..<(s.length + Self.catchUpTokens)])
                inputs.append(SequenceInput(sequence: s, tokens: chunk, logits: .none))
                continue
            }
            r.speculative!.beginDraft()
            proposing.append((r, k, inputs.count))
            inputs.append(SequenceInput(sequence: s, tokens: Array(r.tokens[s.length...]), logits: .last))
        }
        guard !inputs.isEmpty else { return [:] }
        do {
            var logits = try model.forward(inputs)
            for p in proposing { _ = p.request.speculative!.propose(logits.last(entry: p.entry)!) }
            var round = 1
            while true {
                let active = proposing.filter { $0.k > round }
                if active.isEmpty { break }
                logits = try model.forward(
                    active.map { SequenceInput(sequence: $0.request.draftSequence!, tokens: [$0.request.speculative!.drafts.last!]) })
                for (e, p) in active.enumerated() { _ = p.request.speculative!.propose(logits.last(entry: e)!) }
                round += 1
            }
        } catch {
            logger.warning("draft step failed; this step decodes without drafts", metadata: ["error": "\(error)"])
            for r in prefill.map(\.request) + decoding.map(\.request) { release(r) }
            return [:]
        }
        return Dictionary(uniqueKeysWithValues: proposing.map { ($0.request.id, $0.request.speculative!.drafts) })
    }

    /// After the step: the draft sequence keeps at most the request's committed tokens but the
    /// last (which it is fed next time), and publishes its full blocks.
    func settle(_ r: EngineRequest) {
        guard let s = r.draftSequence else { return }
        let keep = min(s.length, max(0, r.tokens.count - 1))
        if s.length > keep { cache.truncate(s, to: keep) }
        if prefixCaching { cache.publishFullBlocks(s) }
    }

    func release(_ r: EngineRequest) {
        if let s = r.draftSequence { cache.release(s) }
        r.draftSequence = nil
    }
}
