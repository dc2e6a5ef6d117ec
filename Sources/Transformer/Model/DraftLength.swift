// How many tokens the draft model proposes per verification (k), adapted from the acceptance rate.
//
// With a per-token acceptance rate a (each draft token kept with probability a, independently), a
// verification of k draft tokens yields E(k) = (1 − a^(k+1)) / (1 − a) tokens (the kept ones and the
// correction or bonus). It costs one target step (k + 1 rows cost about one row: decode is bound by
// reading the weights) plus k draft steps, each `draftCost` of a target step. k is the value in
// 1...maximum with the most tokens per unit of cost, E(k) / (1 + k · draftCost), recomputed after
// every verification from an exponential average of the measured rate (weight `smoothing`).
// The default maximum keeps a verification's k + 1 rows within `QuantKernels.rowInvariantRows`,
// where each row is computed bitwise as a one-token step would compute it: at temperature 0 the
// output is then the target model's alone, token for token.
import Foundation
import Tensor

public struct DraftLength: Sendable {
    public let minimum: Int
    public let maximum: Int
    /// Cost of one draft step as a fraction of one target step (e.g. the ratio of weight bytes read).
    public let draftCost: Double
    public let smoothing: Double
    /// The averaged acceptance rate; starts optimistic so that drafting begins at a useful length.
    public private(set) var acceptanceRate: Double
    public private(set) var current: Int

    /// The longest draft whose verification rows (k + 1) the kernels compute as one-token steps.
    public static var rowInvariantMaximum: Int { QuantKernels.rowInvariantRows - 1 }

    public init(minimum: Int = 1, maximum: Int = DraftLength.rowInvariantMaximum, draftCost: Double, smoothing: Double = 0.2, initialRate: Double = 0.7) {
        precondition(minimum >= 1 && maximum >= minimum, "draft length bounds must satisfy 1 <= minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.draftCost = max(0, draftCost)
        self.smoothing = smoothing
        acceptanceRate = initialRate
        current = minimum
        current = best(for: initialRate)
    }

    /// A fixed length (benchmarks, tests).
    public static func fixed(_ k: Int) -> DraftLength {
        DraftLength(minimum: k, maximum: k, draftCost: 0)
    }

    /// Records one verification: `accepted` of `drafted` tokens were kept.
    public mutating func record(drafted: Int, accepted: Int) {
        guard drafted > 0 else { return }
        acceptanceRate += smoothing * (Double(accepted) / Double(drafted) - acceptanceRate)
        current = best(for: acceptanceRate)
    }

    /// The k with the most expected tokens per unit of cost at acceptance rate `a`.
    public func best(for a: Double) -> Int {
        let a = min(max(a, 0), 0.999)
        var bestK = minimum, bestValue = -1.0
        for k in minimum...maximum {
            let expected = (1 - pow(a, Double(k + 1))) / (1 - a)
            let value = expected / (1 + Double(k) * draftCost)
            if value > bestValue + 1e-12 { bestK = k; bestValue = value }
        }
        return bestK
    }
}
