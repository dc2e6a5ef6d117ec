import Foundation
import Tokenizer
import Transformer

extension GGUFFile {
    public func string(_ key: String) -> String? { metadata[key]?.stringValue }
    public func int(_ key: String) -> Int? { metadata[key]?.intValue }
    public func float(_ key: String) -> Double? { metadata[key]?.floatValue }
    public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }

    private func require<T>(_ value: T?, _ key: String, _ what: String) throws -> T {
        guard let value else {
            let found = metadata[key].map { "a \($0.type) value" } ?? "nothing"
            throw ImportError("\(path): metadata '\(key)' should be \(what), found \(found)")
        }
        return value
    }

    /// The model configuration from `general.architecture` and `<arch>.*` keys.
    /// Llama GGUF files store q/k rows permuted for llama.cpp's "normal" RoPE, which rotates
    /// interleaved pairs: their layout is "interleaved". Qwen2 files keep the NEOX order: "halves".
    public func modelConfiguration() throws -> ModelConfiguration {
        let arch = try require(string("general.architecture"), "general.architecture", "a string")
        let architecture: ModelConfiguration.Architecture, ropeLayout: ModelConfiguration.RopeLayout
        switch arch {
        case "llama": (architecture, ropeLayout) = (.llama, .interleaved)
        case "qwen2": (architecture, ropeLayout) = (.qwen2, .halves)
        default: throw ImportError("\(path): architecture '\(arch)' is not supported (supported: llama, qwen2)")
        }
        func key(_ k: String) -> String { "\(arch).\(k)" }
        let hidden = try require(int(key("embedding_length")), key("embedding_length"), "an integer")
        let heads = try require(int(key("attention.head_count")), key("attention.head_count"), "an integer")
        let kvHeads = int(key("attention.head_count_kv")) ?? heads
        guard heads > 0 else { throw ImportError("\(path): \(key("attention.head_count")) is \(heads), expected a positive number") }
        let headDim = int(key("attention.key_length")) ?? hidden / heads
        if let v = int(key("attention.value_length")), v != headDim {
            throw ImportError("\(path): value head size \(v) differs from key head size \(headDim) (not supported)")
        }
        if let rot = int(key("rope.dimension_count")), rot != headDim {
            throw ImportError("\(path): partial RoPE (\(rot) of \(headDim) dimensions) is not supported")
        }
        if let scaling = string(key("rope.scaling.type")), scaling != "none" {
            throw ImportError("\(path): RoPE scaling '\(scaling)' is not supported")
        }
        if tensorInfo(named: "rope_freqs.weight") != nil {
            throw ImportError("\(path): RoPE frequency factors (rope_freqs.weight, Llama 3.1 style scaling) are not supported")
        }
        guard let embedding = tensorInfo(named: "token_embd.weight"), embedding.dimensions.count == 2 else {
            throw ImportError("\(path): tensor 'token_embd.weight' is missing or not 2-D")
        }
        let configuration = ModelConfiguration(
            architecture: architecture,
            numHiddenLayers: try require(int(key("block_count")), key("block_count"), "an integer"),
            hiddenSize: hidden,
            numAttentionHeads: heads,
            numKeyValueHeads: kvHeads,
            headDim: headDim,
            intermediateSize: try require(int(key("feed_forward_length")), key("feed_forward_length"), "an integer"),
            vocabSize: embedding.dimensions[1],
            ropeTheta: Float(float(key("rope.freq_base")) ?? 10_000),
            ropeLayout: ropeLayout,
            rmsNormEps: Float(
                try require(float(key("attention.layer_norm_rms_epsilon")), key("attention.layer_norm_rms_epsilon"), "a number")),
            maxPositionEmbeddings: int(key("context_length")) ?? 4096,
            tieWordEmbeddings: tensorInfo(named: "output.weight") == nil,
            attentionBias: tensorInfo(named: "blk.0.attn_q.bias") != nil)
        do { try configuration.validate() } catch { throw ImportError("\(path): \(error)") }
        return configuration
    }

    /// The tokenizer from `tokenizer.ggml.*`.
    public func tokenizerDescription() throws -> TokenizerDescription {
        let model = try require(string("tokenizer.ggml.model"), "tokenizer.ggml.model", "a string")
        let kind: TokenizerDescription.Kind
        switch model {
        case "gpt2": kind = .byteLevelBPE
        case "llama": kind = .sentencePiece
        default:
            throw ImportError(
                "\(path): tokenizer model '\(model)' is not supported (supported: gpt2 = byte-level BPE, llama = SentencePiece)")
        }
        let tokens = try require(
            metadata["tokenizer.ggml.tokens"]?.arrayValue?.stringValues, "tokenizer.ggml.tokens", "an array of strings")
        var types = metadata["tokenizer.ggml.token_type"]?.arrayValue?.intValues ?? Array(repeating: 1, count: tokens.count)
        guard types.count == tokens.count else {
            throw ImportError("\(path): tokenizer.ggml.token_type has \(types.count) entries, expected one per token (\(tokens.count))")
        }
        types = types.map { (1...6).contains($0) ? $0 : 1 }
        var merges: [String] = []
        if let m = metadata["tokenizer.ggml.merges"] {
            merges = try require(m.arrayValue?.stringValues, "tokenizer.ggml.merges", "an array of strings")
        }
        if kind == .byteLevelBPE && merges.isEmpty {
            throw ImportError("\(path): byte-level BPE tokenizer without tokenizer.ggml.merges")
        }
        var scores: [Float] = []
        if kind == .sentencePiece {
            scores = metadata["tokenizer.ggml.scores"]?.arrayValue?.floatValues ?? []
            guard scores.count == tokens.count else {
                throw ImportError("\(path): tokenizer.ggml.scores has \(scores.count) entries, expected one per token (\(tokens.count))")
            }
            scores = scores.map { $0.isFinite ? $0 : ($0 < 0 ? -Float.greatestFiniteMagnitude : Float.greatestFiniteMagnitude) }
        }
        func id(_ key: String) throws -> Int? {
            guard let v = int(key) else { return nil }
            guard v >= 0 && v < tokens.count else {
                throw ImportError("\(path): \(key) is \(v), outside the vocabulary of \(tokens.count) tokens")
            }
            return v
        }
        let bos = try id("tokenizer.ggml.bos_token_id"), eos = try id("tokenizer.ggml.eos_token_id")
        let eot = try id("tokenizer.ggml.eot_token_id"), eom = try id("tokenizer.ggml.eom_token_id")
        return TokenizerDescription(
            kind: kind,
            preTokenizer: string("tokenizer.ggml.pre") ?? "default",
            tokens: tokens,
            tokenTypes: types,
            merges: merges,
            scores: scores,
            bosTokenId: bos,
            eosTokenId: eos,
            padTokenId: try id("tokenizer.ggml.padding_token_id"),
            unknownTokenId: try id("tokenizer.ggml.unknown_token_id"),
            endOfTurnTokenIds: endOfTurnIds(tokens: tokens, tokenTypes: types, declared: [eot, eos, eom]),
            // llama.cpp's defaults when the key is absent: SentencePiece adds BOS, BPE does not.
            addBosToken: bool("tokenizer.ggml.add_bos_token") ?? (kind == .sentencePiece),
            addSpacePrefix: bool("tokenizer.ggml.add_space_prefix") ?? (kind == .sentencePiece))
    }

    /// Reads configuration, tokenizer, chat template and tensors, checking the tensor set against the configuration.
    public func importModel() throws -> ImportedModel {
        let configuration = try modelConfiguration()
        let tokenizer = try tokenizerDescription()
        if tokenizer.tokens.count != configuration.vocabSize {
            // Some files pad the embedding beyond the vocabulary; the reverse cannot work.
            guard tokenizer.tokens.count < configuration.vocabSize else {
                throw ImportError(
                    "\(path): the tokenizer has \(tokenizer.tokens.count) tokens but token_embd.weight only \(configuration.vocabSize) rows"
                )
            }
        }
        var found: [String: SourceTensor] = [:]
        for t in tensors {
            guard t.dimensions.count <= 2 || t.dimensions.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                throw ImportError("\(path): tensor '\(t.name)' has \(t.dimensions.count) dimensions \(t.dimensions), expected 1 or 2")
            }
            guard t.type.traits != nil else {
                throw ImportError(
                    "\(path): tensor '\(t.name)' has type \(t.type), which is not supported (supported: \(GGMLType.supportedNames))")
            }
            found[t.name] = SourceTensor(
                name: t.name, type: t.type, rows: t.rows, cols: t.cols, isVector: t.dimensions.count == 1,
                data: try data(of: t), owner: mapping)
        }
        let arranged = try arrange(found, configuration: configuration, source: path)
        return ImportedModel(
            configuration: configuration, tokenizer: tokenizer, chatTemplate: string("tokenizer.chat_template"),
            source:
                "GGUF v\(version) \(URL(fileURLWithPath: path).lastPathComponent) (\(string("general.name") ?? "unnamed"), \(mapping.size) bytes)",
            tensors: arranged)
    }
}
