import Foundation
import Tensor
import Transformer
import XCTest

final class SamplerTests: XCTestCase {
    /// A logit row with a clear argmax and a wide spread.
    static let logits: [Float] = {
        var rng = SamplingRNG(seed: 11)
        return (0..<1000).map { _ in 4 * rng.nextSigned() }
    }()
    static var argmax: Int { logits.indices.max { logits[$0] < logits[$1] }! }

    private func draw(_ p: SamplingParameters, _ n: Int, logits: [Float] = SamplerTests.logits) -> [Int] {
        var s = Sampler(parameters: p)
        return (0..<n).map { _ in s.sample(logits) }
    }

    func testFixedSeedIsReproducible() {
        for p in [
            SamplingParameters(temperature: 0.8, seed: 42), SamplingParameters(temperature: 1.2, topK: 40, topP: 0.9, minP: 0.01, seed: 7),
        ] {
            XCTAssertEqual(draw(p, 50), draw(p, 50))
        }
        XCTAssertNotEqual(draw(SamplingParameters(temperature: 1, seed: 1), 50), draw(SamplingParameters(temperature: 1, seed: 2), 50))
    }

    func testTopK1IsGreedy() {
        XCTAssertEqual(Set(draw(SamplingParameters(temperature: 1.5, topK: 1, seed: 3), 100)), [Self.argmax])
    }

    func testTemperatureToZeroIsGreedy() {
        XCTAssertEqual(Set(draw(SamplingParameters(temperature: 0, seed: 3), 20)), [Self.argmax])
        XCTAssertEqual(Set(draw(SamplingParameters(temperature: 1e-4, seed: 3), 200)), [Self.argmax])
    }

    func testTopKAndTopPAndMinPRestrictTheSupport() {
        let sorted = Self.logits.indices.sorted { Self.logits[$0] > Self.logits[$1] }
        XCTAssertTrue(Set(draw(SamplingParameters(topK: 5, seed: 1), 500)).isSubset(of: Set(sorted.prefix(5))))
        // top-p: the smallest prefix whose softmax mass reaches p.
        let m = Self.logits.max()!
        let w = Self.logits.map { exp(Double($0 - m)) }
        let total = w.reduce(0, +)
        var cumulative = 0.0, nucleus = 0
        for i in sorted { cumulative += w[i]; nucleus += 1; if cumulative >= 0.5 * total { break } }
        let drawn = Set(draw(SamplingParameters(topP: 0.5, seed: 1), 2000))
        XCTAssertTrue(drawn.isSubset(of: Set(sorted.prefix(nucleus))))
        XCTAssertGreaterThan(drawn.count, 1)
        // min-p: only tokens with probability >= 0.2 × the best one's.
        let allowed = Set(Self.logits.indices.filter { w[$0] >= 0.2 })
        XCTAssertTrue(Set(draw(SamplingParameters(minP: 0.2, seed: 1), 1000)).isSubset(of: allowed))
    }

    /// Draws from a small logit vector follow its softmax: chi-square with 4 degrees of freedom
    /// below 18.47 (p = 0.001).
    func testDistributionMatchesSoftmax() {
        let logits: [Float] = [1.0, 2.0, 0.5, -1.0, 1.5]
        let n = 20000
        var counts = [Int](repeating: 0, count: logits.count)
        for t in draw(SamplingParameters(temperature: 1, seed: 2024), n, logits: logits) { counts[t] += 1 }
        let w = logits.map { exp(Double($0)) }
        let total = w.reduce(0, +)
        var chiSquare = 0.0
        for i in logits.indices {
            let expected = Double(n) * w[i] / total
            chiSquare += pow(Double(counts[i]) - expected, 2) / expected
        }
        XCTAssertLessThan(chiSquare, 18.47, "counts \(counts)")
        // With temperature 2 the distribution is softmax(logits / 2).
        counts = [Int](repeating: 0, count: logits.count)
        for t in draw(SamplingParameters(temperature: 2, topP: 0.999_999, seed: 99), n, logits: logits) { counts[t] += 1 }
        let w2 = logits.map { exp(Double($0) / 2) }
        let total2 = w2.reduce(0, +)
        chiSquare = 0
        for i in logits.indices {
            let expected = Double(n) * w2[i] / total2
            chiSquare += pow(Double(counts[i]) - expected, 2) / expected
        }
        XCTAssertLessThan(chiSquare, 18.47, "counts \(counts)")
    }

    func testPenaltiesLowerRecentTokens() {
        let logits: [Float] = [3, 2.9, 1, 0]
        var s = Sampler(parameters: SamplingParameters(temperature: 0, repetitionPenalty: 1.1))
        XCTAssertEqual(s.sample(logits), 0)
        s.observe(0)
        XCTAssertEqual(s.sample(logits), 1)  // 3 / 1.1 < 2.9
        var f = Sampler(parameters: SamplingParameters(temperature: 0, frequencyPenalty: 0.05))
        f.observe([0, 0, 0])
        XCTAssertEqual(f.sample(logits), 1)  // 3 - 0.15 < 2.9
        var p = Sampler(parameters: SamplingParameters(temperature: 0, presencePenalty: 0.2, penaltyWindow: 2))
        p.observe([0, 1, 2])  // window keeps only 1, 2
        XCTAssertEqual(p.sample(logits), 0)
        p.observe(0)  // window: 2, 0
        XCTAssertEqual(p.sample(logits), 1)
    }

    func testInvalidParametersThrow() {
        XCTAssertThrowsError(try SamplingParameters(temperature: -1).validate())
        XCTAssertThrowsError(try SamplingParameters(topP: 0).validate())
        XCTAssertThrowsError(try SamplingParameters(minP: 2).validate())
        XCTAssertNoThrow(try SamplingParameters().validate())
    }
}

final class GeneratorTests: XCTestCase {
    func testGreedyGenerationMatchesReferenceArgmax() throws {
        let tiny = try TinyModel(.qwen2)
        let generator = Generator(model: tiny.model, cache: try tiny.cache())
        let prompt = randomTokens(6, vocab: 101, seed: 8)
        var streamed: [Int] = []
        let result = try generator.generate(
            prompt: prompt, parameters: GenerationParameters(maxTokens: 8, sampling: .greedy, prefillChunk: 4),
            onToken: {
                streamed.append($0); return .proceed
            })
        XCTAssertEqual(result.tokens, streamed)
        XCTAssertEqual(result.stopReason, .maxTokens)
        // Reference: argmax of the full recomputation at each step.
        var context = prompt
        for _ in 0..<8 {
            let row = tiny.reference.logits(context).last!
            context.append(row.indices.max { row[$0] < row[$1] }!)
        }
        XCTAssertEqual(result.tokens, Array(context[prompt.count...]))
        XCTAssertEqual(generator.cache.freeBlockCount, generator.cache.blockCount)
    }

    func testStopTokenCancellationAndRequestedStop() throws {
        let tiny = try TinyModel(.llama)
        let generator = Generator(model: tiny.model, cache: try tiny.cache())
        let prompt = randomTokens(5, vocab: 101, seed: 9)
        let free = try generator.generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 6, sampling: .greedy))
        let stop = free.tokens[3]
        let firstIndex = free.tokens.firstIndex(of: stop)!
        let stopped = try generator.generate(
            prompt: prompt, parameters: GenerationParameters(maxTokens: 6, sampling: .greedy, stopTokenIds: [stop]))
        XCTAssertEqual(stopped.tokens, Array(free.tokens[..<firstIndex]))
        XCTAssertEqual(stopped.stopReason, .stopToken(stop))

        var polls = 0
        let cancelled = try generator.generate(
            prompt: prompt, parameters: GenerationParameters(maxTokens: 6, sampling: .greedy),
            isCancelled: {
                polls += 1; return polls > 3
            })
        XCTAssertEqual(cancelled.stopReason, .cancelled)
        XCTAssertLessThan(cancelled.tokens.count, 6)

        let requested = try generator.generate(
            prompt: prompt, parameters: GenerationParameters(maxTokens: 6, sampling: .greedy),
            onToken: { _ in .stop })
        XCTAssertEqual(requested.tokens.count, 1)
        XCTAssertEqual(requested.stopReason, .requested)
    }

    /// A reused sequence keeps the common prefix and gives the same tokens as a fresh run.
    func testReusedSequenceMatchesFreshRun() throws {
        let tiny = try TinyModel(.qwen2)
        let generator = Generator(model: tiny.model, cache: try tiny.cache())
        let history = randomTokens(9, vocab: 101, seed: 12)
        let sequence = generator.cache.makeSequence()
        let p = GenerationParameters(maxTokens: 5, sampling: .greedy)
        let first = try generator.generate(prompt: history, parameters: p, sequence: sequence)
        let next = history + first.tokens + [3, 4, 5]
        let reused = try generator.generate(prompt: next, parameters: p, sequence: sequence)
        XCTAssertEqual(reused.stats.reusedPromptTokens, history.count + first.tokens.count - 1)
        let fresh = try generator.generate(prompt: next, parameters: p)
        XCTAssertEqual(reused.tokens, fresh.tokens)
    }

    func testStreamYieldsTheSameTokens() async throws {
        let tiny = try TinyModel(.llama)
        let generator = Generator(model: tiny.model, cache: try tiny.cache())
        let prompt = randomTokens(4, vocab: 101, seed: 13)
        let p = GenerationParameters(maxTokens: 7, sampling: SamplingParameters(temperature: 0.9, seed: 5))
        let direct = try generator.generate(prompt: prompt, parameters: p).tokens
        var streamed: [Int] = []
        for try await t in generator.stream(prompt: prompt, parameters: p) { streamed.append(t) }
        XCTAssertEqual(streamed, direct)
    }
}
