/// The hyper-parameters of a Llama-family decoder (Llama, Qwen2), named as Hugging Face's
/// `config.json` names them, in camelCase. Stored as JSON in a Sarvam weight file's header; the
/// importer fills it from a GGUF file's metadata or a Hugging Face `config.json`.
public struct ModelConfiguration: Codable, Sendable, Equatable {
    /// "llama" or "qwen2" (Qwen2 = Llama with biases on the q/k/v projections).
    public var architecture: String
    public var numHiddenLayers: Int
    public var hiddenSize: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var ropeTheta: Float
    /// "interleaved": RoPE rotates pairs (2i, 2i+1) of a head (llama.cpp's "normal" RoPE, for which Llama
    /// GGUF files permute their q/k rows); "halves": pairs (i, i + headDim/2) (NEOX / Hugging Face's
    /// rotate_half; Qwen2 GGUF files and every Hugging Face checkpoint).
    public var ropeLayout: String
    public var rmsNormEps: Float
    public var maxPositionEmbeddings: Int
    /// The output projection reuses `token_embd.weight` (no `output.weight` tensor).
    public var tieWordEmbeddings: Bool
    /// q/k/v projections have biases (Qwen2).
    public var attentionBias: Bool

    public static let supportedArchitectures = ["llama", "qwen2"]
    public static let ropeLayouts = ["interleaved", "halves"]

    public init(architecture: String, numHiddenLayers: Int, hiddenSize: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int, intermediateSize: Int, vocabSize: Int, ropeTheta: Float,
                ropeLayout: String, rmsNormEps: Float, maxPositionEmbeddings: Int, tieWordEmbeddings: Bool,
                attentionBias: Bool) {
        self.architecture = architecture
        self.numHiddenLayers = numHiddenLayers
        self.hiddenSize = hiddenSize
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim
        self.intermediateSize = intermediateSize
        self.vocabSize = vocabSize
        self.ropeTheta = ropeTheta
        self.ropeLayout = ropeLayout
        self.rmsNormEps = rmsNormEps
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
    }

    /// Checks that the numbers describe a model this runtime can run; the message names the field,
    /// the value found and what was expected.
    public func validate() throws {
        func fail(_ message: String) -> ModelConfigurationError { ModelConfigurationError(message: message) }
        guard Self.supportedArchitectures.contains(architecture) else {
            throw fail("architecture '\(architecture)' is not supported (expected one of \(Self.supportedArchitectures.joined(separator: ", ")))")
        }
        let positive: [(String, Int)] = [
            ("numHiddenLayers", numHiddenLayers), ("hiddenSize", hiddenSize), ("numAttentionHeads", numAttentionHeads),
            ("numKeyValueHeads", numKeyValueHeads), ("headDim", headDim), ("intermediateSize", intermediateSize),
            ("vocabSize", vocabSize), ("maxPositionEmbeddings", maxPositionEmbeddings),
        ]
        for (name, value) in positive where value <= 0 {
            throw fail("\(name) is \(value), expected a positive number")
        }
        // Guard against absurd values from a corrupted source: 2^24 covers every real model by far.
        for (name, value) in positive where value > 1 << 24 {
            throw fail("\(name) is \(value), which is implausibly large (limit \(1 << 24))")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw fail("numAttentionHeads (\(numAttentionHeads)) must be a multiple of numKeyValueHeads (\(numKeyValueHeads))")
        }
        guard headDim % 2 == 0 else { throw fail("headDim is \(headDim), expected an even number (RoPE rotates pairs)") }
        guard Self.ropeLayouts.contains(ropeLayout) else {
            throw fail("ropeLayout '\(ropeLayout)' is unknown (expected \"interleaved\" or \"halves\")")
        }
        guard ropeTheta.isFinite && ropeTheta > 0 else { throw fail("ropeTheta is \(ropeTheta), expected a positive number") }
        guard rmsNormEps.isFinite && rmsNormEps > 0 && rmsNormEps < 1 else {
            throw fail("rmsNormEps is \(rmsNormEps), expected a small positive number such as 1e-6")
        }
    }
}

public struct ModelConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { "invalid model configuration: \(message)" }
}
