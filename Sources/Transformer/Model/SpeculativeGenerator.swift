// One sequence with speculative decoding: a small draft model proposes k tokens (one decode step
// each), the target model scores [last, d_1..d_k] in one forward pass, and the kept drafts plus one
// target token are emitted; both KV caches are cut back to what was kept. The tokens are those of
// the target alone: identical at temperature 0, the same distribution otherwise
// (`SpeculativeVerification`). Stops exactly as `Generator` does (stop tokens, max tokens, context,
// cancellation, the caller's stop), checked token by token.
import Foundation
import Tensor

public struct SpeculativeStats: Sendable, Codable {
    /// Target forward passes after the prompt (each verifies one round of drafts).
    public var verifications = 0
    public var draftedTokens = 0
    public var acceptedTokens = 0

    public init() {}

    /// Fraction of draft tokens the target kept.
    public var acceptanceRate: Double { draftedTokens > 0 ? Double(acceptedTokens) / Double(draftedTokens) : 0 }
    /// Tokens produced per target forward pass (kept drafts plus the correction or bonus).
    public var tokensPerVerification: Double {
        verifications > 0 ? Double(acceptedTokens + verifications) / Double(verifications) : 0
    }
}

public struct SpeculativeResult: Sendable {
    public var generation: GenerationResult
    public var speculation: SpeculativeStats
}

/// Drives one sequence through a target model with a draft model. Not reentrant (the models are not).
public final class SpeculativeGenerator: @unchecked Sendable {
    public let target: Model
    public let targetCache: KVCache
    public let draft: Model
    public let draftCache: KVCache
    /// The draft length rule; kept across generations (the acceptance rate carries over).
    public var draftLength: DraftLength

    /// Throws when the two models do not share a vocabulary or the draft's cache is shorter.
    public init(target: Model, targetCache: KVCache, draft: Model, draftCache: KVCache, draftLength: DraftLength? = nil) throws {
        guard target.configuration.vocabSize == draft.configuration.vocabSize else {
            throw InferenceError.invalidConfiguration(
                "speculative decoding needs one vocabulary: the target has \(target.configuration.vocabSize) tokens, "
                    + "the draft \(draft.configuration.vocabSize)")
        }
        guard draftCache.contextLength >= targetCache.contextLength else {
            throw InferenceError.invalidConfiguration(
                "the draft's cache holds \(draftCache.contextLength) positions, fewer than the target's \(targetCache.contextLength)")
        }
        self.target = target
        self.targetCache = targetCache
        self.draft = draft
        self.draftCache = draftCache
        self.draftLength =
            draftLength ?? DraftLength(draftCost: Self.draftCost(target: target, draft: draft))
    }

    /// A draft step's cost relative to a target step: decode reads every weight once per step.
    public static func draftCost(target: Model, draft: Model) -> Double {
        Double(draft.weights.bytesReadPerToken) / Double(max(1, target.weights.bytesReadPerToken))
    }

    public func generate(
        prompt: [Int], parameters: GenerationParameters, isCancelled: () -> Bool = { false },
        onToken: (Int) -> GenerationControl = { _ in .proceed }
    ) throws -> SpeculativeResult {
        guard !prompt.isEmpty else { throw InferenceError.invalidBatch("empty prompt") }
        try parameters.sampling.validate()
        guard parameters.maxTokens >= 0, parameters.prefillChunk > 0 else {
            throw InferenceError.invalidConfiguration("maxTokens must be >= 0 and prefillChunk > 0")
        }
        let seq = targetCache.makeSequence(), draftSeq = draftCache.makeSequence()
        defer {
            targetCache.release(seq)
            draftCache.release(draftSeq)
        }
        var stats = GenerationStats()
        stats.promptTokens = prompt.count
        var speculation = SpeculativeStats()
        var sampler = SpeculativeSampler(parameters: parameters.sampling)
        sampler.observe(prompt)

        let clock = ContinuousClock()
        let promptStart = clock.now
        var next = 0
        for start in stride(from: 0, to: prompt.count, by: parameters.prefillChunk) {
            if isCancelled() {
                return SpeculativeResult(
                    generation: GenerationResult(tokens: [], stopReason: .cancelled, stats: stats), speculation: speculation)
            }
            let end = min(prompt.count, start + parameters.prefillChunk)
            let last = end == prompt.count
            let chunk = Array(prompt[start..<end])
            let logits = try target.forward([SequenceInput(sequence: seq, tokens: chunk, logits: last ? .last : .none)])
            if last, parameters.maxTokens > 0 { next = sampler.sampleTarget(logits.last(entry: 0)!) }
            _ = try draft.forward([SequenceInput(sequence: draftSeq, tokens: chunk, logits: .none)])
        }
        stats.promptSeconds = seconds(clock.now - promptStart)

        // committed = prompt + emitted tokens; the target's cache holds all but the last of them.
        var committed = prompt
        var tokens: [Int] = []
        var reason = StopReason.maxTokens
        let decodeStart = clock.now
        var firstTokenTime = decodeStart

        /// Emits one token as Generator does; false when generation ends with it.
        func emit(_ token: Int) -> Bool {
            if parameters.stopTokenIds.contains(token) { reason = .stopToken(token); return false }
            tokens.append(token)
            committed.append(token)
            if tokens.count == 1 { firstTokenTime = clock.now }
            sampler.observe(token)
            if onToken(token) == .stop { reason = .requested; return false }
            if tokens.count == parameters.maxTokens { reason = .maxTokens; return false }
            return true
        }

        if parameters.maxTokens > 0 && emit(next) {
            rounds: while true {
                if isCancelled() { reason = .cancelled; break }
                let kept = seq.length  // == committed.count - 1
                if kept + 1 > targetCache.contextLength { reason = .contextLimit; break }
                let k = max(0, min(draftLength.current, targetCache.contextLength - kept - 1, parameters.maxTokens - tokens.count - 1))

                sampler.beginDraft()
                var feed = Array(committed[draftSeq.length...])
                for _ in 0..<k {
                    let logits = try draft.forward([SequenceInput(sequence: draftSeq, tokens: feed, logits: .last)])
                    feed = [sampler.propose(logits.last(entry: 0)!)]
                }
                let drafts = sampler.drafts
                let logits = try target.forward([SequenceInput(sequence: seq, tokens: [committed.last!] + drafts, logits: .all)])
                let outcome = sampler.verify { logits.row($0) }
                speculation.verifications += 1
                speculation.draftedTokens += k
                speculation.acceptedTokens += outcome.accepted
                if k > 0 { draftLength.record(drafted: k, accepted: outcome.accepted) }

                // Keep the committed tokens and the accepted drafts; the draft model saw at most
                // d_1..d_(k−1) and is fed the rest at the next round.
                let length = committed.count + outcome.accepted
                let kept1 = targetCache.truncate(seq, to: length)
                precondition(kept1 == length, "a speculative tail shares a cached block")
                if draftSeq.length > length { draftCache.truncate(draftSeq, to: length) }

                for token in drafts[0..<outcome.accepted] + [outcome.next] where !emit(token) { break rounds }
            }
        }
        stats.generatedTokens = tokens.count
        stats.generationSeconds = tokens.isEmpty ? 0 : seconds(clock.now - firstTokenTime)
        return SpeculativeResult(
            generation: GenerationResult(tokens: tokens, stopReason: reason, stats: stats), speculation: speculation)
    }
}
