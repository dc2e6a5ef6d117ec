// Small synthetic models of both flavours the engine serves, with random Float32 weights.
import Foundation
import Tensor
import Transformer

enum Flavour: String, CaseIterable {
    /// Llama: no bias, interleaved RoPE (GGUF's permuted q/k), tied embeddings, 2 heads per kv head.
    case llama
    /// Qwen2: q/k/v bias, halves RoPE, separate output matrix, 4 heads per kv head.
    case qwen2
}

/// A configuration built through Codable (camelCase keys), so it does not depend on an initializer.
func tinyConfiguration(_ flavour: Flavour, layers: Int = 2, vocab: Int = 101, maxPositions: Int = 256) -> ModelConfiguration {
    let llama = flavour == .llama
    let json: [String: Any] = [
        "architecture": flavour.rawValue,
        "numHiddenLayers": layers,
        "hiddenSize": 64,
        "numAttentionHeads": 4,
        "numKeyValueHeads": llama ? 2 : 1,
        "headDim": 16,
        "intermediateSize": 96,
        "vocabSize": vocab,
        "ropeTheta": llama ? 10000.0 : 1_000_000.0,
        "ropeLayout": llama ? "interleaved" : "halves",
        "rmsNormEps": llama ? 1e-5 : 1e-6,
        "maxPositionEmbeddings": maxPositions,
        "tieWordEmbeddings": llama,
        "attentionBias": !llama,
    ]
    let data = try! JSONSerialization.data(withJSONObject: json)
    return try! JSONDecoder().decode(ModelConfiguration.self, from: data)
}

struct TinyModel {
    let configuration: ModelConfiguration
    let tensors: [String: [Float]]
    let model: Model

    init(
        _ flavour: Flavour, seed: UInt64 = 1, format: WeightFormat = .f32, threads: Int = 2,
        layers: Int = 2, maxPositions: Int = 256
    ) throws {
        configuration = tinyConfiguration(flavour, layers: layers, maxPositions: maxPositions)
        tensors = ModelWeights.syntheticTensors(configuration, seed: seed)
        let weights = try ModelWeights(configuration: configuration, floatTensors: tensors, format: format)
        model = try Model(configuration: configuration, weights: weights, pool: ThreadPool(threads: threads))
    }

    var reference: ReferenceTransformer { ReferenceTransformer(c: configuration, w: tensors) }

    func cache(
        blocks: Int = 64, precision: KVCache.Precision = .float32, blockSize: Int = 4,
        contextLength: Int? = nil
    ) throws -> KVCache {
        try KVCache(
            configuration: configuration, blockCount: blocks, precision: precision, blockSize: blockSize,
            contextLength: contextLength)
    }
}

/// Random token ids in the vocabulary.
func randomTokens(_ count: Int, vocab: Int, seed: UInt64) -> [Int] {
    var rng = SamplingRNG(seed: seed)
    return (0..<count).map { _ in Int(rng.next() % UInt64(vocab)) }
}

/// Runs `tokens` through `model` in chunks of the given sizes (cycled), returning the logits of
/// every position.
func chunkedLogits(_ model: Model, cache: KVCache, tokens: [Int], chunks: [Int]) throws -> [[Float]] {
    let sequence = cache.makeSequence()
    defer { cache.release(sequence) }
    var out: [[Float]] = []
    var start = 0, i = 0
    while start < tokens.count {
        let end = min(tokens.count, start + chunks[i % chunks.count])
        let logits = try model.forward([SequenceInput(sequence: sequence, tokens: Array(tokens[start..<end]), logits: .all)])
        for r in 0..<(end - start) { out.append(logits.array(row: r)) }
        start = end
        i += 1
    }
    return out
}
