// The sampling side of speculative decoding for one sequence: draws the draft's tokens from the
// draft model's processed distributions and verifies them against the target model's rows with
// `SpeculativeVerification`. Penalties see the right history in every row: the committed tokens,
// then the draft tokens before that row (copies of the samplers observe those). Draft tokens come
// from a draft model's rows (`propose(_:)`) or are given outright (`propose(token:)`, a lookup):
// then q is one-hot at the token, kept with probability p(token), and a rejection draws from p
// without it.
import Foundation

public struct SpeculativeSampler: Sendable {
    public let parameters: SamplingParameters
    /// The target's sampler over the committed history (prompt and emitted tokens).
    private var target: Sampler
    /// The draft's sampler over the committed history, and a copy that also saw this round's drafts.
    private var draftHistory: Sampler
    private var drafting: Sampler
    /// Draws for the draft tokens, acceptance and corrections (the samplers' own generators are
    /// only used by `sampleTarget`).
    private var rng: SamplingRNG
    /// This round's draft tokens d_1..d_k and, when not greedy, their distributions q_1..q_k [k][V]
    /// (nil: one-hot at the token, a draft given outright).
    public private(set) var drafts: [Int] = []
    private var draftDistributions: [[Float]?] = []

    public init(parameters: SamplingParameters) {
        self.parameters = parameters
        var system = SystemRandomNumberGenerator()
        let seed = parameters.seed ?? system.next()
        target = Sampler(parameters: parameters)
        var draftParameters = parameters
        draftParameters.seed = seed ^ 0x5DEE_CE66_D1CE_5EED
        draftHistory = Sampler(parameters: draftParameters)
        drafting = draftHistory
        rng = SamplingRNG(seed: seed ^ 0xA5A5_1234_9876_F00D)
    }

    public var isGreedy: Bool { parameters.isGreedy }

    /// Records a committed token (the prompt, then every emitted token) for the penalties.
    public mutating func observe(_ token: Int) {
        target.observe(token)
        draftHistory.observe(token)
    }

    public mutating func observe<S: Sequence>(_ tokens: S) where S.Element == Int {
        for t in tokens { observe(t) }
    }

    /// A token from one target row without drafting (the first token after the prompt, or k = 0).
    public mutating func sampleTarget(_ logits: UnsafeBufferPointer<Float>) -> Int {
        target.sample(logits)
    }

    /// Starts a round of drafting after the committed history.
    public mutating func beginDraft() {
        drafting = draftHistory
        drafts.removeAll(keepingCapacity: true)
        draftDistributions.removeAll(keepingCapacity: true)
    }

    /// Draws the next draft token from the draft model's row after the committed history and the
    /// drafts so far.
    public mutating func propose(_ draftLogits: UnsafeBufferPointer<Float>) -> Int {
        let token: Int
        if parameters.isGreedy {
            token = drafting.sample(draftLogits)
        } else {
            let q = drafting.probabilities(draftLogits)
            token = SpeculativeVerification.draw(q, uniform: rng.nextUniform())
            draftDistributions.append(q)
        }
        drafting.observe(token)
        drafts.append(token)
        return token
    }

    /// Appends a draft token chosen without a distribution (e.g. by `PromptLookup`).
    public mutating func propose(token: Int) {
        if !parameters.isGreedy { draftDistributions.append(nil) }
        drafting.observe(token)
        drafts.append(token)
    }

    /// Verifies this round's drafts against the target's rows: `targetRow(i)` is the target's logit
    /// row after the committed history and d_1..d_i (i = 0...k). Rows after the first rejection are
    /// not read.
    public mutating func verify(_ targetRow: (Int) -> UnsafeBufferPointer<Float>) -> SpeculativeVerification.Outcome {
        var t = target
        for i in drafts.indices {
            let row = targetRow(i)
            if parameters.isGreedy {
                let best = t.sample(row)
                if best != drafts[i] { return .init(accepted: i, next: best) }
            } else {
                let p = t.probabilities(row)
                if let q = draftDistributions[i] {
                    if !SpeculativeVerification.accepts(drafts[i], p: p, q: q, uniform: rng.nextUniform()) {
                        return .init(accepted: i, next: SpeculativeVerification.residual(p: p, q: q, uniform: rng.nextUniform()))
                    }
                } else if !(rng.nextUniform() < Double(p[drafts[i]])) {
                    let next = SpeculativeVerification.residual(p: p, excluding: drafts[i], uniform: rng.nextUniform())
                    return .init(accepted: i, next: next)
                }
            }
            t.observe(drafts[i])
        }
        let row = targetRow(drafts.count)
        if parameters.isGreedy { return .init(accepted: drafts.count, next: t.sample(row)) }
        return .init(accepted: drafts.count, next: SpeculativeVerification.draw(t.probabilities(row), uniform: rng.nextUniform()))
    }
}
