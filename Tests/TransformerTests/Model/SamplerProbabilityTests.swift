// `Sampler.probabilities` must describe what `Sampler.sample` draws: for each filter combination,
// the frequencies of many draws agree with the vector (chi-square), the vector is zero exactly where
// `sample` never goes, and for plain temperature it equals a softmax written out here.
import Foundation
import Transformer
import XCTest

final class SamplerProbabilityTests: XCTestCase {
    static let logits: [Float] = {
        var rng = SamplingRNG(seed: 23)
        return (0..<24).map { _ in 2.5 * rng.nextSigned() }
    }()

    func testPlainTemperatureIsTheSoftmax() {
        var s = Sampler(parameters: SamplingParameters(temperature: 0.7, seed: 1))
        let p = s.probabilities(Self.logits)
        let m = Self.logits.max()!
        let e = Self.logits.map { exp(Double($0 - m) / 0.7) }
        let total = e.reduce(0, +)
        for i in p.indices { XCTAssertEqual(Double(p[i]), e[i] / total, accuracy: 1e-6, "token \(i)") }
    }

    func testGreedyIsOneHotAtTheArgmax() {
        var s = Sampler(parameters: .greedy)
        let p = s.probabilities(Self.logits)
        let best = Self.logits.indices.max { Self.logits[$0] < Self.logits[$1] }!
        XCTAssertEqual(p[best], 1)
        XCTAssertEqual(p.reduce(0, +), 1)
    }

    func testProbabilitiesAgreeWithSampleFrequencies() {
        let cases: [(String, SamplingParameters, [Int])] = [
            ("temperature", SamplingParameters(temperature: 1.1, seed: 3), []),
            ("top-k", SamplingParameters(temperature: 0.9, topK: 6, seed: 4), []),
            ("top-p", SamplingParameters(temperature: 1.0, topP: 0.8, seed: 5), []),
            ("min-p", SamplingParameters(temperature: 1.3, minP: 0.1, seed: 6), []),
            ("top-k, top-p, min-p", SamplingParameters(temperature: 0.8, topK: 10, topP: 0.9, minP: 0.05, seed: 7), []),
            (
                "penalties",
                SamplingParameters(temperature: 1.0, repetitionPenalty: 1.3, presencePenalty: 0.4, frequencyPenalty: 0.2, seed: 8),
                [3, 3, 7, 11, 3]
            ),
        ]
        let draws = 120_000
        for (name, parameters, history) in cases {
            var sampler = Sampler(parameters: parameters)
            sampler.observe(history)
            let p = sampler.probabilities(Self.logits)
            XCTAssertEqual(Double(p.reduce(0, +)), 1, accuracy: 1e-5, "\(name): sums to 1")
            var counts = [Int](repeating: 0, count: p.count)
            for _ in 0..<draws { counts[sampler.sample(Self.logits)] += 1 }
            var chi = 0.0, cells = 0
            for i in p.indices {
                if p[i] == 0 {
                    XCTAssertEqual(counts[i], 0, "\(name): token \(i) drawn but has probability 0")
                    continue
                }
                let expected = Double(p[i]) * Double(draws)
                chi += pow(Double(counts[i]) - expected, 2) / expected
                cells += 1
            }
            // Chi-square at p ≈ 1e-4: about df + 4.3·sqrt(2·df) + 8 for df up to 23.
            let df = Double(cells - 1)
            let bound = df + 4.3 * (2 * df).squareRoot() + 8
            XCTAssertLessThan(chi, bound, "\(name): chi-square \(chi) over \(cells) tokens")
        }
    }

    /// A vector that is off (here: the plain softmax without the top-k filter) fails the same check.
    func testTheCheckCanFail() {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0.9, topK: 6, seed: 4))
        var plain = Sampler(parameters: SamplingParameters(temperature: 0.9, seed: 4))
        let wrong = plain.probabilities(Self.logits)
        let draws = 120_000
        var counts = [Int](repeating: 0, count: wrong.count)
        for _ in 0..<draws { counts[sampler.sample(Self.logits)] += 1 }
        var chi = 0.0
        for i in wrong.indices {
            let expected = Double(wrong[i]) * Double(draws)
            chi += pow(Double(counts[i]) - expected, 2) / expected
        }
        XCTAssertGreaterThan(chi, 23 + 4.3 * (46.0).squareRoot() + 8)
    }
}
