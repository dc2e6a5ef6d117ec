// Speculative decoding's acceptance rule (Leviathan et al. 2023, Chen et al. 2023). A draft model
// proposed d_1..d_k, drawing d_i from its processed distribution q_i; the target model scored the
// same positions in one forward pass, giving its processed distributions p_0..p_k (p_i: the next
// token after the prefix and d_1..d_i). Each d_{i+1} is kept with probability min(1, p_i(d)/q_i(d));
// at the first rejection the next token is drawn from normalize(max(0, p_i − q_i)); when all k are
// kept, a bonus token is drawn from p_k. The tokens emitted are distributed exactly as tokens drawn
// from the target one at a time. Greedy (temperature 0): p and q are one-hot at their argmax, so
// this is "keep while the target's argmax equals the draft, then emit the target's argmax".
//
// Shapes: V = vocabulary size, k = draft length; p has k + 1 rows of V, q has k rows of V.
import Foundation

public enum SpeculativeVerification {
    public struct Outcome: Equatable, Sendable {
        /// Draft tokens kept (0...k).
        public var accepted: Int
        /// The token after the kept ones: the correction at the first rejection, or the bonus.
        public var next: Int

        public init(accepted: Int, next: Int) {
            self.accepted = accepted
            self.next = next
        }
    }

    /// Whether draft token `token` (drawn from q) is kept against p, given u uniform in [0, 1):
    /// kept when u < p(token) / q(token).
    public static func accepts(_ token: Int, p: [Float], q: [Float], uniform u: Double) -> Bool {
        let pd = Double(p[token]), qd = Double(q[token])
        guard qd > 0 else { return pd > 0 }  // cannot happen when the token was drawn from q
        return u * qd < pd
    }

    /// The token after a rejection: drawn from normalize(max(0, p − q)) with u uniform in [0, 1).
    /// When p ≤ q everywhere (p == q up to rounding, where a rejection has probability ~0), from p.
    public static func residual(p: [Float], q: [Float], uniform u: Double) -> Int {
        precondition(p.count == q.count, "p and q must have the same vocabulary")
        var total = 0.0
        for i in p.indices { total += max(0, Double(p[i]) - Double(q[i])) }
        guard total > 0 else { return draw(p, uniform: u) }
        let target = u * total
        var cumulative = 0.0, last = 0
        for i in p.indices {
            let r = max(0, Double(p[i]) - Double(q[i]))
            guard r > 0 else { continue }
            cumulative += r
            last = i
            if target < cumulative { return i }
        }
        return last
    }

    /// The residual for a one-hot q at `token` (a draft given outright): normalize(max(0, p − q)) is p
    /// without that token. When p holds nothing else (a rejection has probability ~0), from p.
    public static func residual(p: [Float], excluding token: Int, uniform u: Double) -> Int {
        var rest = p
        rest[token] = 0
        guard rest.contains(where: { $0 > 0 }) else { return draw(p, uniform: u) }
        return draw(rest, uniform: u)
    }

    /// A token drawn from the probabilities p (summing to 1 up to rounding) with u uniform in [0, 1).
    public static func draw(_ p: [Float], uniform u: Double) -> Int {
        var total = 0.0
        for x in p { total += Double(x) }
        let target = u * total
        var cumulative = 0.0, last = 0
        for i in p.indices where p[i] > 0 {
            cumulative += Double(p[i])
            last = i
            if target < cumulative { return i }
        }
        return last
    }

    /// The whole rule over k draft tokens. `uniform` gives independent draws in [0, 1); it is called
    /// once per examined draft token and once for the next token.
    public static func verify(p: [[Float]], draft: [Int], q: [[Float]], uniform: () -> Double) -> Outcome {
        precondition(p.count == draft.count + 1 && q.count == draft.count, "need k + 1 target rows and k draft rows")
        for i in draft.indices {
            if !accepts(draft[i], p: p[i], q: q[i], uniform: uniform()) {
                return Outcome(accepted: i, next: residual(p: p[i], q: q[i], uniform: uniform()))
            }
        }
        return Outcome(accepted: draft.count, next: draw(p[draft.count], uniform: uniform()))
    }
}
