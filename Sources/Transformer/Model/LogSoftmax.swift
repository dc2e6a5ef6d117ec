// Log-probabilities of one logit row (V entries): log p_i = l_i − max − log Σ_j exp(l_j − max),
// summed in Double so that a 150k-entry vocabulary loses nothing to Float rounding.
import Foundation

/// One token and its log-probability.
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int
    public var logprob: Float

    public init(token: Int, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

public enum LogSoftmax {
    /// The log-probability of `token` under `row`, and the `top` most likely tokens (most likely
    /// first, lower id first on ties). `top` is clamped to 0...V.
    public static func entries(_ row: UnsafeBufferPointer<Float>, token: Int, top: Int) -> (chosen: Float, top: [TokenLogprob]) {
        let V = row.count
        precondition(V > 0 && token >= 0 && token < V, "token \(token) outside the row of \(V) logits")
        var maximum = -Float.infinity
        for l in row where l > maximum { maximum = l }
        var sum = 0.0
        for l in row { sum += exp(Double(l - maximum)) }
        let logZ = Double(maximum) + log(sum)
        func logprob(_ i: Int) -> Float { Float(Double(row[i]) - logZ) }

        // The k largest by insertion into a short sorted list (k <= 20 in practice).
        let k = min(max(0, top), V)
        var best: [Int] = []
        best.reserveCapacity(k + 1)
        if k > 0 {
            for i in 0..<V {
                if best.count == k, !(row[i] > row[best[k - 1]]) { continue }
                var j = best.count
                while j > 0 && row[i] > row[best[j - 1]] { j -= 1 }
                best.insert(i, at: j)
                if best.count > k { best.removeLast() }
            }
        }
        return (logprob(token), best.map { TokenLogprob(token: $0, logprob: logprob($0)) })
    }
}
