// Perplexity the way llama.cpp's `perplexity` tool computes it (examples/perplexity, "wikitext"
// mode), so the numbers compare: the text is tokenized once (by the caller), cut into
// floor(n / ctx) chunks of ctx tokens (the tail is dropped), each chunk evaluated from an empty
// cache, and only its second half scored: logits at positions j in ctx/2 ..< ctx-1 predict token
// j+1. When the model adds BOS, llama.cpp overwrites the first token of each chunk with BOS.
// The estimate is exp(mean NLL) over all scored tokens; the standard error follows llama.cpp too.
import Foundation
import Tensor

public struct PerplexityResult: Sendable, Codable {
    public var context: Int
    public var chunks: Int
    public var scoredTokens: Int
    /// The running estimate after each chunk (what llama.cpp prints as [1]x,[2]y,...).
    public var runningPerplexity: [Double]
    /// Each chunk's own perplexity.
    public var chunkPerplexity: [Double]
    public var perplexity: Double
    public var standardError: Double
}

public enum Perplexity {
    /// - Parameters:
    ///   - tokens: the whole text's token ids (at least 2 × context of them, as llama.cpp requires).
    ///   - bosTokenId: the BOS id when the model adds one (replaces each chunk's first token), else nil.
    ///   - batch: tokens per forward step (bounds the logit rows held at once: batch × V floats).
    public static func evaluate(
        model: Model, tokens: [Int], context: Int, bosTokenId: Int? = nil, batch: Int = 128,
        cachePrecision: KVCache.Precision = .float16,
        progress: ((_ chunk: Int, _ of: Int, _ running: Double) -> Void)? = nil
    ) throws -> PerplexityResult {
        guard context >= 4, batch > 0 else {
            throw InferenceError.invalidConfiguration("perplexity needs ctx >= 4 and batch > 0, found \(context), \(batch)")
        }
        guard tokens.count >= 2 * context else {
            throw InferenceError.invalidConfiguration(
                "perplexity needs at least 2 × ctx = \(2 * context) tokens, the text has \(tokens.count) (use a smaller --ctx or a longer text)"
            )
        }
        let cache = try KVCache(
            configuration: model.configuration, blockCount: (context + 15) / 16,
            precision: cachePrecision, blockSize: 16, contextLength: context)
        let chunkCount = tokens.count / context
        let first = context / 2
        var nll = 0.0, nll2 = 0.0, count = 0
        var running: [Double] = [], perChunk: [Double] = []
        let V = model.configuration.vocabSize
        for chunk in 0..<chunkCount {
            var ids = Array(tokens[(chunk * context)..<((chunk + 1) * context)])
            let targets = ids  // the scored targets are the text's own tokens
            if let bos = bosTokenId { ids[0] = bos }
            let sequence = cache.makeSequence()
            defer { cache.release(sequence) }
            var chunkNLL = 0.0, chunkCount = 0
            var start = 0
            while start < context {
                let end = min(context, start + batch)
                let wants = end > first
                let logits = try model.forward([
                    SequenceInput(
                        sequence: sequence, tokens: Array(ids[start..<end]),
                        logits: wants ? .all : .none)
                ])
                if wants {
                    for j in max(start, first)..<min(end, context - 1) {
                        let row = logits.row(j - start)
                        var maximum = -Float.infinity
                        for v in 0..<V { maximum = max(maximum, row[v]) }
                        var sum = 0.0
                        for v in 0..<V { sum += exp(Double(row[v] - maximum)) }
                        let logProbability = Double(row[targets[j + 1]] - maximum) - log(sum)
                        nll -= logProbability
                        nll2 += logProbability * logProbability
                        chunkNLL -= logProbability
                        chunkCount += 1
                        count += 1
                    }
                }
                start = end
            }
            perChunk.append(exp(chunkNLL / Double(chunkCount)))
            running.append(exp(nll / Double(count)))
            progress?(chunk + 1, chunkCount, running.last!)
        }
        let mean = nll / Double(count)
        let perplexity = exp(mean)
        var variance = nll2 / Double(count) - mean * mean
        var standardError = 0.0
        if variance > 0, count > 1 {
            variance = (variance / Double(count - 1)).squareRoot()
            standardError = perplexity * variance
        }
        return PerplexityResult(
            context: context, chunks: chunkCount, scoredTokens: count, runningPerplexity: running,
            chunkPerplexity: perChunk, perplexity: perplexity, standardError: standardError)
    }
}
