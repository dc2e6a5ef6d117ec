// The default model (int8 and int4 conversions of its GGUF) against Tests/Fixtures/generation.json,
// an independent float32 numpy forward pass over the dequantized GGUF (see the README there).
import Foundation
import Tensor
import TestSupport
import Transformer
import XCTest

struct GenerationReference: Decodable {
    struct Prompt: Decodable {
        var name: String
        var prompt_ids: [Int]
        var first_token_top5_ids: [Int]
        var first_token_top5_logits: [Float]
        var greedy_ids: [Int]
        var step_margin: [Float]
    }
    struct PerplexityReference: Decodable {
        var ctx: Int
        var llama_cpp_q4_k_m_ppl: Double
    }
    var prompts: [Prompt]
    var perplexity_reference: PerplexityReference

}

/// Opens a converted default model or fails saying how to get it.
func loadDefaultModel(variant: String?, threads: Int = 2, file: StaticString = #filePath, line: UInt = #line) throws -> (Model, WeightFile)
{
    let path = defaultModelPath(variant: variant).path
    guard FileManager.default.fileExists(atPath: path) else {
        XCTFail("missing \(path): run `tools/fetch-model default --test-variants` (tools/test does it)", file: file, line: line)
        throw CancellationError()
    }
    let weights = try WeightFile.open(path, verify: false)
    return (try Model(file: weights, pool: ThreadPool(threads: threads)), weights)
}

/// Tests/Fixtures/generation.json; a missing file fails the test (`MissingFixture` names the path).
func loadGenerationReference() throws -> GenerationReference {
    try JSONDecoder().decode(GenerationReference.self, from: fixtureData("generation.json"))
}

final class RealModelTests: XCTestCase {
    /// First token and top-5 set for every prompt; with `checkGreedy`, the greedy continuation
    /// (teacher-forced on the reference ids) up to the first step whose reference margin is < 0.5.
    /// The top-5 sets must be equal, except that a reference candidate may trade places with ours
    /// at the 5th rank when our logits of the two differ by less than `tieMargin`: that is below
    /// the noise of summation order. Measured: two files holding the same weight values (the
    /// GGUF's Q5_0 matrices as int8 and as int5, whose kernels add in different orders) gave logits
    /// up to 0.14-0.30 apart, because int8 activation codes round differently, and perplexities
    /// 5.3200 and 5.3275. With the int4 conversion (most Q5_0 matrices requantized to 4 bits, the
    /// best logit moved by up to 0.72) `reverse_string`'s reference 5th candidate (6713, 0.13 below
    /// the 4th) sits 0.024-0.027 from a token outside the reference's five, on either side of it
    /// depending on such orders; with only the first layer kept in int8 it fell below (5.503 ppl).
    static let tieMargin: Float = 0.1

    private func check(variant: String?, checkGreedy: Bool) throws {
        let reference = try loadGenerationReference()
        let (model, weights) = try loadDefaultModel(variant: variant)
        let variant = variant ?? "default"
        let V = model.configuration.vocabSize
        let cache = try model.makeCache(memoryBudget: 64 << 20, precision: .float16)
        for prompt in reference.prompts {
            let sequence = cache.makeSequence()
            defer { cache.release(sequence) }
            var logits = try model.forward([SequenceInput(sequence: sequence, tokens: prompt.prompt_ids)])
            let first = logits.last(entry: 0)!
            let top5 = Ops.topK(first.baseAddress!, count: V, k: 5)
            XCTAssertEqual(top5[0].index, prompt.greedy_ids[0], "\(variant) \(prompt.name): first token")
            let missing = Set(prompt.first_token_top5_ids).subtracting(top5.map(\.index))
            for token in missing {
                XCTAssertLessThan(
                    top5[4].value - first[token], Self.tieMargin,
                    "\(variant) \(prompt.name): top-5 \(top5) vs reference \(prompt.first_token_top5_ids) \(prompt.first_token_top5_logits); our logits of the reference's: \(prompt.first_token_top5_ids.map { first[$0] })"
                )
            }
            print("\(variant) \(prompt.name): best logit \(top5[0].value), reference \(prompt.first_token_top5_logits[0])")
            guard checkGreedy else { continue }
            let decided = prompt.step_margin.firstIndex { $0 < 0.5 } ?? prompt.greedy_ids.count
            var step = 0
            while step + 1 < decided {
                logits = try model.forward([SequenceInput(sequence: sequence, tokens: [prompt.greedy_ids[step]])])
                step += 1
                let next = Ops.argmax(logits.last(entry: 0)!.baseAddress!, count: V)
                XCTAssertEqual(
                    next, prompt.greedy_ids[step], "\(variant) \(prompt.name): greedy step \(step) (margin \(prompt.step_margin[step]))")
                if next != prompt.greedy_ids[step] { break }
            }
        }
        withExtendedLifetime(weights) {}
    }

    func testInt8MatchesReferenceGeneration() throws { try check(variant: "int8", checkGreedy: true) }
    func testInt4MatchesReferenceFirstTokens() throws { try check(variant: "int4", checkGreedy: false) }
    func testDefaultConversionMatchesReferenceFirstTokens() throws { try check(variant: nil, checkGreedy: false) }
}

/// Float16 keys and values against Float32 on the real model: the logits of every step of a prompt
/// and its greedy continuation stay within 0.5. Measured 0.36: Qwen2's keys are large (k biases),
/// so half precision's 2^-11 relative rounding of K moves q·k by tenths; about what int8
/// activation quantization does to the logits (~0.3).
final class RealModelCachePrecisionTests: XCTestCase {
    func testFloat16CacheMatchesFloat32() throws {
        let reference = try loadGenerationReference()
        let (model, weights) = try loadDefaultModel(variant: "int8")
        let prompt = reference.prompts[0]
        let tokens = prompt.prompt_ids + prompt.greedy_ids.prefix(16)
        var rows: [KVCache.Precision: [[Float]]] = [:]
        for precision in KVCache.Precision.allCases {
            let cache = try model.makeCache(memoryBudget: 16 << 20, precision: precision)
            let sequence = cache.makeSequence()
            var out: [[Float]] = []
            var logits = try model.forward([SequenceInput(sequence: sequence, tokens: prompt.prompt_ids)])
            out.append(logits.array(row: 0))
            for t in tokens[prompt.prompt_ids.count...] {
                logits = try model.forward([SequenceInput(sequence: sequence, tokens: [t])])
                out.append(logits.array(row: 0))
            }
            rows[precision] = out
        }
        var worst: Float = 0
        for (a, b) in zip(rows[.float16]!, rows[.float32]!) { worst = max(worst, maxAbsoluteDifference(a, b)) }
        print("float16 vs float32 KV cache: largest logit difference \(worst)")
        XCTAssertLessThan(worst, 0.5)
        withExtendedLifetime(weights) {}
    }
}
