/// The hyper-parameters of a Llama-family decoder (Llama, Qwen2), named as Hugging Face's
/// `config.json` names them, in camelCase. Stored as JSON in a Sarvam weight file's header; the
/// importer fills it from a GGUF file's metadata or a Hugging Face `config.json`.
public struct ModelConfiguration: Codable, Sendable, Equatable {
    /// The model family; the raw values are what weight files store.
    public enum Architecture: String, Codable, Sendable, CaseIterable {
        case llama
        /// Llama with biases on the q/k/v projections.
        case qwen2

        public init(from decoder: Decoder) throws { self = try decodeNamedValue(decoder) }
    }

    /// Which pairs of a head's dimensions RoPE rotates; the raw values are what weight files store.
    public enum RopeLayout: String, Codable, Sendable, CaseIterable {
        /// Pairs (2i, 2i+1): llama.cpp's "normal" RoPE, for which Llama GGUF files permute their q/k rows.
        case interleaved
        /// Pairs (i, i + headDim/2): NEOX / Hugging Face's rotate_half (Qwen2 GGUF files and every
        /// Hugging Face checkpoint).
        case halves

        public init(from decoder: Decoder) throws { self = try decodeNamedValue(decoder) }
    }

    public var architecture: Architecture
    public var numHiddenLayers: Int
    public var hiddenSize: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var ropeTheta: Float
    public var ropeLayout: RopeLayout
    public var rmsNormEps: Float
    public var maxPositionEmbeddings: Int
    /// The output projection reuses `token_embd.weight` (no `output.weight` tensor).
    public var tieWordEmbeddings: Bool
    /// q/k/v projections have biases (Qwen2).
    public var attentionBias: Bool

    public init(
        architecture: Architecture, numHiddenLayers: Int, hiddenSize: Int, numAttentionHeads: Int,
        numKeyValueHeads: Int, headDim: Int, intermediateSize: Int, vocabSize: Int, ropeTheta: Float,
        ropeLayout: RopeLayout, rmsNormEps: Float, maxPositionEmbeddings: Int, tieWordEmbeddings: Bool,
        attentionBias: Bool
    ) {
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
    /// the value found and what was expected. (Unknown architectures and RoPE layouts fail earlier,
    /// when the configuration is decoded.)
    public func validate() throws {
        func fail(_ message: String) -> ModelConfigurationError { ModelConfigurationError(message: message) }
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
        guard ropeTheta.isFinite && ropeTheta > 0 else { throw fail("ropeTheta is \(ropeTheta), expected a positive number") }
        guard rmsNormEps.isFinite && rmsNormEps > 0 && rmsNormEps < 1 else {
            throw fail("rmsNormEps is \(rmsNormEps), expected a small positive number such as 1e-6")
        }
    }
}

/// Decodes one of an enum's raw strings; anything else throws an error that names the field, the
/// value found and the values expected ("ropeLayout is 'neox', expected one of 'interleaved', 'halves'").
func decodeNamedValue<Value: RawRepresentable & CaseIterable>(_ decoder: Decoder) throws -> Value where Value.RawValue == String {
    let text = try decoder.singleValueContainer().decode(String.self)
    if let value = Value(rawValue: text) { return value }
    let field = decoder.codingPath.last?.stringValue ?? "\(Value.self)"
    let expected = Value.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
    throw DecodingError.dataCorrupted(
        .init(codingPath: decoder.codingPath, debugDescription: "\(field) is '\(text)', expected one of \(expected)"))
}

public struct ModelConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { "invalid model configuration: \(message)" }
}
