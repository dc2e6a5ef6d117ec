// One draft source's acceptance rate for one sequence, averaged over its verifications, and the
// most drafts a verification may take. With a per-token acceptance rate a (each draft token kept
// with probability a, independently), k drafts yield E(k) = (1 − a^(k+1)) / (1 − a) tokens;
// `DraftLengthChoice` picks k from that and the measured costs. The default maximum keeps a
// verification's k + 1 rows within `QuantKernels.rowInvariantRows`, where each row is computed
// bitwise as a one-token step would compute it: at temperature 0 the output is then the target
// model's alone, token for token.
import Foundation
import Tensor

public struct DraftLength: Sendable {
    public let maximum: Int
    /// Weight of the newest verification in the exponential average.
    public let smoothing: Double
    public private(set) var acceptanceRate: Double

    /// The longest draft whose verification rows (k + 1) the kernels compute as one-token steps.
    public static var rowInvariantMaximum: Int { QuantKernels.rowInvariantRows - 1 }

    public init(maximum: Int = DraftLength.rowInvariantMaximum, smoothing: Double = 0.2, initialRate: Double = 0.7) {
        precondition(maximum >= 1, "a draft length needs a maximum of at least 1")
        self.maximum = maximum
        self.smoothing = smoothing
        acceptanceRate = initialRate
    }

    /// Records one verification: `accepted` of `drafted` tokens were kept.
    public mutating func record(drafted: Int, accepted: Int) {
        guard drafted > 0 else { return }
        acceptanceRate += smoothing * (Double(accepted) / Double(drafted) - acceptanceRate)
    }
}
