// One sequence with speculative decoding: draft tokens come from a small draft model (k decode
// steps of it) or from `PromptLookup` (the tokens that followed an earlier match of the sequence's
// end; no forward pass), the target model scores [last, d_1..d_k] in one forward pass, and the kept
// drafts plus one target token are emitted; both KV caches are cut back to what was kept. With both
// sources a round takes the lookup's draft when there is a match, else the model's. The tokens are
// those of the target alone: identical at temperature 0, the same distribution otherwise
// (`SpeculativeVerification`). Stops exactly as `Generator` does (stop tokens, max tokens, context,
// cancellation, the caller's stop), checked token by token.
//
// k per round is `DraftLengthChoice`'s (expected tokens per second) from the source's averaged
// acceptance rate, the target's measured forward time by row count (extra rows are not free where
// the small-M kernels are compute-bound) and the draft model's measured pass time.
import Foundation
import Tensor

public struct SpeculativeStats: Sendable, Codable {
    /// Target forward passes after the prompt (each verifies one round of drafts).
    public var verifications = 0
    public var draftedTokens = 0
    public var acceptedTokens = 0
    /// Of those, the drafts that came from `PromptLookup`.
    public var lookupDraftedTokens = 0
    public var lookupAcceptedTokens = 0

    public init() {}

    /// Fraction of draft tokens the target kept.
    public var acceptanceRate: Double { draftedTokens > 0 ? Double(acceptedTokens) / Double(draftedTokens) : 0 }
    /// Tokens produced per target forward pass (kept drafts plus the correction or bonus).
    public var tokensPerVerification: Double {
        verifications > 0 ? Double(acceptedTokens + verifications) / Double(verifications) : 0
    }

    public static func + (a: SpeculativeStats, b: SpeculativeStats) -> SpeculativeStats {
        var s = a
        s.verifications += b.verifications
        s.draftedTokens += b.draftedTokens
        s.acceptedTokens += b.acceptedTokens
        s.lookupDraftedTokens += b.lookupDraftedTokens
        s.lookupAcceptedTokens += b.lookupAcceptedTokens
        return s
    }
}

public struct SpeculativeResult: Sendable {
    public var generation: GenerationResult
    public var speculation: SpeculativeStats
}

/// Drives one sequence through a target model with a draft model, prompt lookup, or both. Not
/// reentrant (the models are not). What it learns (acceptance rates, timings) carries over from one
/// generation to the next.
public final class SpeculativeGenerator: @unchecked Sendable {
    public let target: Model
    public let targetCache: KVCache
    public let draft: Model?
    public let draftCache: KVCache?
    public let lookup: PromptLookup?
    /// The model draft's averaged acceptance rate (and the most drafts a round takes); the lookup's
    /// by match length (index: length − minimumMatch), since longer matches guess better.
    public var draftLength: DraftLength
    public var lookupLengths: [DraftLength]
    /// A fixed k instead of the cost rule (benchmarks, tests); nil: `DraftLengthChoice` per round.
    public var fixedDraftLength: Int?
    /// A draft step's cost as a fraction of a target step (weight bytes read), until measured.
    private let draftCost: Double
    /// Measured seconds of a target forward by row count (index rows − 1), and of one draft pass.
    private var rowSeconds: [Double?]
    private var draftPassSeconds: Double?
    /// Rounds in a row where the rule chose no drafts; past `probeInterval` two are tried anyway.
    private var roundsWithoutDrafts = 0
    static let probeInterval = 16

    /// Throws when the two models do not share a vocabulary, the draft's cache is shorter, or there
    /// is no source of drafts.
    public init(
        target: Model, targetCache: KVCache, draft: Model? = nil, draftCache: KVCache? = nil, lookup: PromptLookup? = nil,
        draftLength: DraftLength? = nil
    ) throws {
        guard (draft == nil) == (draftCache == nil), draft != nil || lookup != nil else {
            throw InferenceError.invalidConfiguration("speculative decoding needs a draft model with its cache, a prompt lookup, or both")
        }
        if let draft, let draftCache {
            guard target.configuration.vocabSize == draft.configuration.vocabSize else {
                throw InferenceError.invalidConfiguration(
                    "speculative decoding needs one vocabulary: the target has \(target.configuration.vocabSize) tokens, "
                        + "the draft \(draft.configuration.vocabSize)")
            }
            guard draftCache.contextLength >= targetCache.contextLength else {
                throw InferenceError.invalidConfiguration(
                    "the draft's cache holds \(draftCache.contextLength) positions, fewer than the target's \(targetCache.contextLength)")
            }
        }
        self.target = target
        self.targetCache = targetCache
        self.draft = draft
        self.draftCache = draftCache
        self.lookup = lookup
        draftCost = draft.map { Self.draftCost(target: target, draft: $0) } ?? 0
        // Optimistic starting rates, so the first rounds draft and measure (the rates average fast).
        self.draftLength = draftLength ?? DraftLength(initialRate: 0.9)
        lookupLengths = lookup.map { l in (l.minimumMatch...l.maximumMatch).map { _ in DraftLength(initialRate: 0.9) } } ?? []
        rowSeconds = Array(repeating: nil, count: self.draftLength.maximum + 1)
    }

    /// A draft step's cost relative to a target step: decode reads every weight once per step.
    public static func draftCost(target: Model, draft: Model) -> Double {
        Double(draft.weights.bytesReadPerToken) / Double(max(1, target.weights.bytesReadPerToken))
    }

    /// Predicted seconds of a target forward over `rows` rows: measured, else scaled from the nearest
    /// measured row count by a prior (each extra row a quarter of a one-row step), else the prior
    /// alone in units of a one-row step.
    func predictedSeconds(rows: Int) -> Double {
        func prior(_ r: Int) -> Double { 1 + 0.25 * Double(r - 1) }
        if let t = rowSeconds[rows - 1] { return t }
        let measured = rowSeconds.indices.filter { rowSeconds[$0] != nil }
        guard let nearest = measured.min(by: { abs($0 + 1 - rows) < abs($1 + 1 - rows) }) else { return prior(rows) }
        return rowSeconds[nearest]! * prior(rows) / prior(nearest + 1)
    }

    private func record(rows: Int, seconds: Double) {
        guard rows >= 1, rows <= rowSeconds.count, seconds > 0 else { return }
        rowSeconds[rows - 1] = rowSeconds[rows - 1].map { $0 + 0.2 * (seconds - $0) } ?? seconds
    }

    /// k for a source with acceptance `length`, `cap` drafts available and draft passes of
    /// `passSeconds`, and its expected tokens per second.
    private func choose(_ length: DraftLength, cap: Int, passSeconds: Double) -> (k: Int, value: Double) {
        let cap = min(cap, length.maximum)
        var k = fixedDraftLength.map { min($0, cap) } ?? 0
        if fixedDraftLength == nil, cap > 0 {
            k = DraftLengthChoice.best(
                [.init(acceptanceRate: length.acceptanceRate, cap: cap)],
                stepSeconds: { self.predictedSeconds(rows: 1 + $0) }, draftPassSeconds: passSeconds)
        }
        let value =
            DraftLengthChoice.expectedTokens(acceptanceRate: length.acceptanceRate, k: k)
            / (predictedSeconds(rows: 1 + k) + Double(k) * passSeconds)
        return (k, value)
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
        let seq = targetCache.makeSequence(), draftSeq = draftCache?.makeSequence()
        defer {
            targetCache.release(seq)
            if let draftSeq { draftCache?.release(draftSeq) }
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
            if let draft, let draftSeq { _ = try draft.forward([SequenceInput(sequence: draftSeq, tokens: chunk, logits: .none)]) }
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
                let room = max(0, min(draftLength.maximum, targetCache.contextLength - kept - 1, parameters.maxTokens - tokens.count - 1))

                // The source with the most expected tokens per second: the lookup (when it matches)
                // or the draft model; k = 0 for both is a plain step, except for a probe of two
                // drafts every `probeInterval` rounds so the rates stay current.
                sampler.beginDraft()
                let (found, match) = lookup?.draftWithMatch(after: committed, count: room) ?? ([], 0)
                let bucket = match - (lookup?.minimumMatch ?? 0)
                var fromLookupChoice = found.isEmpty ? nil : choose(lookupLengths[bucket], cap: found.count, passSeconds: 0)
                let pass = draftPassSeconds ?? draftCost * predictedSeconds(rows: 1)
                var fromModelChoice = draft == nil ? nil : choose(draftLength, cap: room, passSeconds: pass)
                if (fromLookupChoice?.k ?? 0) == 0 && (fromModelChoice?.k ?? 0) == 0 {
                    roundsWithoutDrafts += 1
                    if roundsWithoutDrafts > Self.probeInterval {
                        if fromLookupChoice != nil {
                            fromLookupChoice!.k = min(2, found.count)
                        } else if fromModelChoice != nil {
                            fromModelChoice!.k = min(2, room)
                        }
                        roundsWithoutDrafts = 0
                    }
                } else {
                    roundsWithoutDrafts = 0
                }
                var fromLookup = false
                if let l = fromLookupChoice, l.k > 0, l.value >= (fromModelChoice.map { $0.k > 0 ? $0.value : 0 } ?? 0) {
                    fromLookup = true
                    for token in found.prefix(l.k) { sampler.propose(token: token) }
                } else if let draft, let draftSeq, let k = fromModelChoice?.k {
                    if k > 0 {
                        let draftStart = clock.now
                        var feed = Array(committed[draftSeq.length...])
                        let caughtUp = feed.count <= 2
                        for _ in 0..<k {
                            let logits = try draft.forward([SequenceInput(sequence: draftSeq, tokens: feed, logits: .last)])
                            feed = [sampler.propose(logits.last(entry: 0)!)]
                        }
                        if caughtUp {
                            let one = seconds(clock.now - draftStart) / Double(k)
                            draftPassSeconds = draftPassSeconds.map { $0 + 0.2 * (one - $0) } ?? one
                        }
                    }
                }
                let drafts = sampler.drafts
                let verifyStart = clock.now
                let logits = try target.forward([SequenceInput(sequence: seq, tokens: [committed.last!] + drafts, logits: .all)])
                record(rows: drafts.count + 1, seconds: seconds(clock.now - verifyStart))
                let outcome = sampler.verify { logits.row($0) }
                let k = drafts.count
                speculation.verifications += 1
                speculation.draftedTokens += k
                speculation.acceptedTokens += outcome.accepted
                if fromLookup {
                    speculation.lookupDraftedTokens += k
                    speculation.lookupAcceptedTokens += outcome.accepted
                    if k > 0 { lookupLengths[bucket].record(drafted: k, accepted: outcome.accepted) }
                } else if k > 0 {
                    draftLength.record(drafted: k, accepted: outcome.accepted)
                }

                // Keep the committed tokens and the accepted drafts; the draft model saw at most
                // d_1..d_(k−1) and is fed the rest at its next round.
                let length = committed.count + outcome.accepted
                let kept1 = targetCache.truncate(seq, to: length)
                precondition(kept1 == length, "a speculative tail shares a cached block")
                if let draftSeq, let draftCache, draftSeq.length > length { draftCache.truncate(draftSeq, to: length) }

                for token in drafts[0..<outcome.accepted] + [outcome.next] where !emit(token) { break rounds }
            }
        }
        stats.generatedTokens = tokens.count
        stats.generationSeconds = tokens.isEmpty ? 0 : seconds(clock.now - firstTokenTime)
        return SpeculativeResult(
            generation: GenerationResult(tokens: tokens, stopReason: reason, stats: stats), speculation: speculation)
    }
}
