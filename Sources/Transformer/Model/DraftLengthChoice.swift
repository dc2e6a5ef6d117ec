// How many draft tokens the speculating requests of one step get: one k for all of them (each
// capped by its own room), the k that buys the most expected tokens per second of this step.
//
// A request with acceptance rate a gains E(a, k) = (1 − a^(k+1)) / (1 − a) tokens from k drafts
// (E = 1 at k = 0: its plain decode row). The step then costs the target's forward with every
// request's extra rows, priced by a measured cost curve (the engine's `StepCostModel`, or
// `SpeculativeGenerator`'s timings by row count: extra rows are not free where the step is
// compute-bound), plus k passes of the draft model (none for lookup drafts):
//     value(k) = Σ_r E(a_r, min(k, cap_r)) / (T(rows + Σ_r min(k, cap_r)) + k · draftPass)
// k = 0 (no speculation this step) wins where the extra rows and the draft passes cost more than
// the kept drafts save: a busy box, low acceptance, many streams.

import Foundation

public enum DraftLengthChoice {
    /// One request that may speculate: its averaged acceptance rate and the most drafts it can take.
    public struct Candidate: Sendable {
        public var acceptanceRate: Double
        public var cap: Int

        public init(acceptanceRate: Double, cap: Int) {
            self.acceptanceRate = acceptanceRate
            self.cap = cap
        }
    }

    /// Expected tokens from k drafts at acceptance rate a (the kept drafts and the correction or bonus).
    public static func expectedTokens(acceptanceRate a: Double, k: Int) -> Double {
        let a = min(max(a, 0), 0.999)
        return (1 - pow(a, Double(k + 1))) / (1 - a)
    }

    /// The k in 0...max cap with the most expected tokens per second; `stepSeconds(extraRows)` is
    /// the target step's predicted seconds with that many draft rows added, `draftPassSeconds` one
    /// draft forward over the candidates. With `limit` (a step's latency budget), a k > 0 whose step
    /// and draft passes would last longer is not taken. Ties go to the shorter draft.
    public static func best(
        _ candidates: [Candidate], stepSeconds: (Int) -> Double, draftPassSeconds: Double, limit: Double? = nil
    ) -> Int {
        let longest = candidates.map(\.cap).max() ?? 0
        var bestK = 0, bestValue = -1.0
        for k in 0...max(0, longest) {
            var tokens = 0.0, rows = 0
            for c in candidates {
                let n = min(k, c.cap)
                tokens += expectedTokens(acceptanceRate: c.acceptanceRate, k: n)
                rows += n
            }
            let seconds = stepSeconds(rows) + Double(k) * draftPassSeconds
            guard seconds > 0, k == 0 || limit.map({ seconds <= $0 }) ?? true else { continue }
            let value = tokens / seconds
            if value > bestValue * (1 + 1e-9) {
                bestK = k
                bestValue = value
            }
        }
        return bestK
    }
}
