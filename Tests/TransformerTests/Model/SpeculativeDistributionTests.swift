// Speculative decoding at temperature > 0 must emit tokens distributed exactly as the target's.
// A tiny Markov "model pair" (a target and a draft logit table, the next token's logits depending
// on the previous token) is run through many seeded speculative rounds; the empirical distribution
// of the first emitted token and of the first two is compared with the exact one, computed here from
// the target's table with a plain softmax (independent of the Sampler). Wrong rules (keeping every
// draft, or emitting the draft's tokens) run through the same harness and must fail the same bound.
import Foundation
import Transformer
import XCTest

final class SpeculativeDistributionTests: XCTestCase {
    static let V = 5
    static let temperature: Float = 0.9

    /// Next-token logits after `previous` (a Markov chain over V tokens), different for the two models.
    static func table(seed: UInt64, scale: Float) -> [[Float]] {
        var rng = SamplingRNG(seed: seed)
        return (0..<V).map { _ in (0..<V).map { _ in scale * rng.nextSigned() } }
    }
    static let targetTable = table(seed: 31, scale: 1.5)
    static let draftTable = table(seed: 77, scale: 1.5)

    /// softmax(l / T), written out here (not the Sampler's).
    static func softmax(_ l: [Float], temperature: Float = temperature) -> [Float] {
        let m = l.max()!
        let e = l.map { exp(Double(($0 - m) / temperature)) }
        let s = e.reduce(0, +)
        return e.map { Float($0 / s) }
    }
    static var targetP: [[Float]] { targetTable.map { softmax($0) } }
    static var draftQ: [[Float]] { draftTable.map { softmax($0) } }

    typealias Rule = (_ p: [[Float]], _ draft: [Int], _ q: [[Float]], _ uniform: () -> Double) -> SpeculativeVerification.Outcome

    /// The first `count` tokens emitted by speculative rounds of `k` drafts after token `start`.
    static func emit(count: Int, start: Int, k: Int, rule: Rule, rng: inout SamplingRNG) -> [Int] {
        var out: [Int] = []
        var last = start
        while out.count < count {
            var drafts: [Int] = [], q: [[Float]] = [], p: [[Float]] = [targetP[last]]
            var previous = last
            for _ in 0..<k {
                let qi = draftQ[previous]
                let d = SpeculativeVerification.draw(qi, uniform: rng.nextUniform())
                drafts.append(d); q.append(qi); p.append(targetP[d])
                previous = d
            }
            let outcome = rule(p, drafts, q) { rng.nextUniform() }
            out += drafts[0..<outcome.accepted] + [outcome.next]
            last = out.last!
        }
        return Array(out.prefix(count))
    }

    /// Pearson's chi-square of `counts` against `expected` probabilities.
    static func chiSquare(_ counts: [Int], _ expected: [Double]) -> Double {
        let n = Double(counts.reduce(0, +))
        return zip(counts, expected).reduce(0) { $0 + pow(Double($1.0) - n * $1.1, 2) / (n * $1.1) }
    }

    /// Chi-square of the first token's and of the first two tokens' empirical distributions.
    static func statistics(rule: Rule, k: Int, trials: Int = 100_000, seed: UInt64 = 5) -> (one: Double, two: Double) {
        var rng = SamplingRNG(seed: seed)
        let start = 2
        var one = [Int](repeating: 0, count: V), two = [Int](repeating: 0, count: V * V)
        for _ in 0..<trials {
            let t = emit(count: 2, start: start, k: k, rule: rule, rng: &rng)
            one[t[0]] += 1
            two[t[0] * V + t[1]] += 1
        }
        let p = targetP
        let expectedOne = p[start].map(Double.init)
        var expectedTwo: [Double] = []
        for a in 0..<V { for b in 0..<V { expectedTwo.append(Double(p[start][a]) * Double(p[a][b])) } }
        return (chiSquare(one, expectedOne), chiSquare(two, expectedTwo))
    }

    // Chi-square bounds at p ≈ 1e-4 for 4 and 24 degrees of freedom: a correct rule fails them
    // once in ten thousand seeds, and the seeds are fixed.
    static let boundOne = 23.5
    static let boundTwo = 56.0

    func testRejectionSamplingMatchesTheTargetDistribution() {
        XCTAssertGreaterThan(Self.minimumCell() * 100_000, 200, "every cell needs an expected count of at least 200 for chi-square")
        for k in [1, 2, 4] {
            let s = Self.statistics(rule: SpeculativeVerification.verify, k: k)
            XCTAssertLessThan(s.one, Self.boundOne, "k = \(k): first token chi-square \(s.one)")
            XCTAssertLessThan(s.two, Self.boundTwo, "k = \(k): first two tokens chi-square \(s.two)")
        }
    }

    func testWrongRulesFailTheSameBound() {
        let acceptAlways: Rule = { p, draft, _, uniform in
            .init(accepted: draft.count, next: SpeculativeVerification.draw(p[draft.count], uniform: uniform()))
        }
        let draftOnly: Rule = { _, draft, q, uniform in
            // Emits the draft's tokens, the last one drawn from the draft too: sampling from q.
            .init(accepted: draft.count - 1, next: draft.last!)
        }
        let rejectFromP: Rule = { p, draft, q, uniform in
            // Correct acceptance, but the correction drawn from p instead of the residual.
            for i in draft.indices where !SpeculativeVerification.accepts(draft[i], p: p[i], q: q[i], uniform: uniform()) {
                return .init(accepted: i, next: SpeculativeVerification.draw(p[i], uniform: uniform()))
            }
            return .init(accepted: draft.count, next: SpeculativeVerification.draw(p[draft.count], uniform: uniform()))
        }
        for (name, rule) in [("accept always", acceptAlways), ("draft only", draftOnly), ("correction from p", rejectFromP)] {
            let s = Self.statistics(rule: rule, k: 2)
            XCTAssertTrue(s.one > Self.boundOne || s.two > Self.boundTwo, "\(name) passed: chi-square \(s.one), \(s.two)")
        }
    }

    /// The same through `SpeculativeSampler` with logit rows (the path the generators use), with
    /// top-k as well: the exact distribution is the softmax over the target's 3 best logits.
    func testSpeculativeSamplerMatchesTheTargetDistribution() {
        checkSamplerDistribution { sampler, previous, _ in Self.draftTable[previous].withUnsafeBufferPointer { sampler.propose($0) } }
    }

    /// A draft with logits for some ids only (a `DraftVocabulary`'s: the others −∞, so q is 0 there)
    /// still gives the target's distribution, also where the target's mass lies outside the draft's.
    func testRestrictedDraftKeepsTheTargetDistribution() {
        let restricted = Self.draftTable.map { row in row.indices.map { $0 < 2 || $0 == 4 ? row[$0] : -Float.infinity } }
        checkSamplerDistribution { sampler, previous, _ in restricted[previous].withUnsafeBufferPointer { sampler.propose($0) } }
    }

    /// Drafts given outright (a prompt lookup's: q one-hot), here a fixed guess that the top-k
    /// sometimes excludes (then p(d) = 0), alone and alternating with the draft model's.
    func testGivenDraftsKeepTheTargetDistribution() {
        checkSamplerDistribution { sampler, previous, _ in
            sampler.propose(token: (previous + 1) % Self.V)
            return (previous + 1) % Self.V
        }
        checkSamplerDistribution { sampler, previous, i in
            if i % 2 == 1 { return Self.draftTable[previous].withUnsafeBufferPointer { sampler.propose($0) } }
            sampler.propose(token: (previous + 2) % Self.V)
            return (previous + 2) % Self.V
        }
    }

    /// Speculative rounds of 3 drafts through `SpeculativeSampler` (each draft from
    /// `propose(sampler, previous token, index in the round)`), at temperature 0.9 with top-k 3: the
    /// first two tokens' empirical distribution against the exact one.
    func checkSamplerDistribution(
        propose: (inout SpeculativeSampler, Int, Int) -> Int, file: StaticString = #filePath, line: UInt = #line
    ) {
        let V = Self.V, trials = 60_000, start = 1, k = 3
        let parameters = SamplingParameters(temperature: Self.temperature, topK: 3)
        func exact(_ row: [Float]) -> [Double] {
            let top = Set(row.indices.sorted { row[$0] > row[$1] }.prefix(3))
            let s = Self.softmax(row.indices.map { top.contains($0) ? row[$0] : -1e30 })
            return s.map(Double.init)
        }
        var one = [Int](repeating: 0, count: V), two = [Int](repeating: 0, count: V * V)
        for trial in 0..<trials {
            var parametersSeeded = parameters
            parametersSeeded.seed = UInt64(trial) &* 0x9E37_79B9 &+ 17
            var sampler = SpeculativeSampler(parameters: parametersSeeded)
            sampler.observe(start)
            var out: [Int] = []
            var last = start
            while out.count < 2 {
                sampler.beginDraft()
                var previous = last
                for i in 0..<k { previous = propose(&sampler, previous, i) }
                let drafts = sampler.drafts
                let rows = ([last] + drafts).flatMap { Self.targetTable[$0] }
                let outcome = rows.withUnsafeBufferPointer { r in
                    sampler.verify { i in UnsafeBufferPointer(rebasing: r[(i * V)..<((i + 1) * V)]) }
                }
                for t in drafts[0..<outcome.accepted] + [outcome.next] {
                    out.append(t)
                    sampler.observe(t)
                }
                last = out.last!
            }
            one[out[0]] += 1
            two[out[0] * V + out[1]] += 1
        }
        let p = Self.targetTable.map(exact)
        var expectedTwo: [Double] = []
        for a in 0..<V { for b in 0..<V { expectedTwo.append(p[start][a] * p[a][b]) } }
        // Cells outside the top-3 must stay empty; the others are tested by chi-square.
        var kept: (counts: [Int], expected: [Double]) = ([], [])
        for i in 0..<V * V {
            if expectedTwo[i] == 0 {
                XCTAssertEqual(two[i], 0, "token pair \(i / V), \(i % V) is outside top-k", file: file, line: line)
            } else {
                kept.counts.append(two[i]); kept.expected.append(expectedTwo[i])
            }
        }
        let keptOne = (0..<V).filter { p[start][$0] > 0 }
        let chiOne = Self.chiSquare(keptOne.map { one[$0] }, keptOne.map { p[start][$0] })
        let chiTwo = Self.chiSquare(kept.counts, kept.expected)
        // 2 and 8 degrees of freedom at p ≈ 1e-4.
        XCTAssertLessThan(chiOne, 18.5, "first token chi-square", file: file, line: line)
        XCTAssertLessThan(chiTwo, 31.8, "first two tokens chi-square", file: file, line: line)
    }

    static func minimumCell() -> Double {
        let p = targetP
        return (0..<V).flatMap { a in (0..<V).map { b in Double(p[2][a]) * Double(p[a][b]) } }.min()!
    }

    /// Greedy: drafts are kept while the target row's argmax equals them, then the target's argmax
    /// of the first disagreeing row (or the bonus row) follows. Rows are one-hot-like logits over 10
    /// tokens peaked at the listed argmax.
    func testGreedyKeepsWhileTheArgmaxAgrees() {
        func outcome(targetArgmax: [Int], draft: [Int]) -> SpeculativeVerification.Outcome {
            var sampler = SpeculativeSampler(parameters: .greedy)
            sampler.beginDraft()
            let rows = UnsafeMutableBufferPointer<Float>.allocate(capacity: 10 * targetArgmax.count)
            defer { rows.deallocate() }
            for (i, peak) in targetArgmax.enumerated() {
                for t in 0..<10 { rows[10 * i + t] = t == peak ? 5 : 0 }
            }
            for d in draft {
                let row = (0..<10).map { Float($0 == d ? 5 : 0) }
                XCTAssertEqual(row.withUnsafeBufferPointer { sampler.propose($0) }, d)
            }
            var read: [Int] = []
            let result = sampler.verify { i in
                read.append(i)
                return UnsafeBufferPointer(rebasing: rows[(10 * i)..<(10 * i + 10)])
            }
            XCTAssertEqual(read, Array(0...result.accepted), "rows after the first rejection are not read")
            return result
        }
        XCTAssertEqual(outcome(targetArgmax: [4, 7, 9, 1], draft: [4, 7, 2]), .init(accepted: 2, next: 9))
        XCTAssertEqual(outcome(targetArgmax: [4, 7, 9], draft: [4, 7]), .init(accepted: 2, next: 9))
        XCTAssertEqual(outcome(targetArgmax: [3], draft: []), .init(accepted: 0, next: 3))
        XCTAssertEqual(outcome(targetArgmax: [3, 5], draft: [4]), .init(accepted: 0, next: 3))
    }

    /// The rate is an exponential average (weight 0.2) of each verification's kept share.
    func testDraftLengthAveragesTheAcceptanceRate() {
        var length = DraftLength(initialRate: 0.7)
        XCTAssertEqual(length.maximum, DraftLength.rowInvariantMaximum, "the longest drafts whose verification stays exact")
        length.record(drafted: 4, accepted: 2)
        XCTAssertEqual(length.acceptanceRate, 0.7 + 0.2 * (0.5 - 0.7), accuracy: 1e-12)
        length.record(drafted: 0, accepted: 0)
        XCTAssertEqual(length.acceptanceRate, 0.66, accuracy: 1e-12, "a round without drafts says nothing")
        for _ in 0..<40 { length.record(drafted: 4, accepted: 4) }
        XCTAssertGreaterThan(length.acceptanceRate, 0.999)
        for _ in 0..<40 { length.record(drafted: 3, accepted: 0) }
        XCTAssertLessThan(length.acceptanceRate, 0.001)
    }
}
