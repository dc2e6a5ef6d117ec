import Foundation
import Tensor
import Tokenizer
import Transformer

/// A source tensor in the source file's own encoding, borrowed from its mapping, under its Sarvam
/// (GGUF-spelled) name. Hugging Face F32/F16/BF16 tensors are expressed with the same ggml types.
public struct SourceTensor: @unchecked Sendable {
    public var name: String
    public var type: GGMLType
    /// [rows, cols], cols contiguous; a 1-D tensor (norm, bias) is [1, n] with `isVector` set.
    public var rows: Int
    public var cols: Int
    public var isVector: Bool
    public var data: UnsafeRawPointer
    public var owner: AnyObject

    public init(name: String, type: GGMLType, rows: Int, cols: Int, isVector: Bool, data: UnsafeRawPointer, owner: AnyObject) {
        self.name = name
        self.type = type
        self.rows = rows
        self.cols = cols
        self.isVector = isVector
        self.data = data
        self.owner = owner
    }

    public var rowBytes: Int { type.rowBytes(cols: cols) }
    public var byteLength: Int { rowBytes * rows }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }

    public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        type.dequantizeRow(row(r), dst, cols: cols)
    }

    /// The whole tensor as Float32 (tests, small tensors).
    public func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        out.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows { dequantizeRow(r, into: p.baseAddress! + r * cols) }
        }
        return out
    }
}

/// What both readers produce: one normalized description plus the tensors to convert.
public struct ImportedModel: @unchecked Sendable {
    public var configuration: ModelConfiguration
    public var tokenizer: TokenizerDescription
    public var chatTemplate: String?
    /// Human-readable origin: format and path.
    public var source: String
    /// In Sarvam order: token_embd, layers in order, output_norm, output.
    public var tensors: [SourceTensor]

    public func tensor(named name: String) -> SourceTensor? { tensors.first { $0.name == name } }
}

public struct ImportError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Tensor names of a Llama-family model in Sarvam's (GGUF) spelling, in file order, with their shapes.
/// Used by both readers to check that a model is complete and consistent with its configuration.
func expectedTensors(_ c: ModelConfiguration) -> [(name: String, shape: [Int], isVector: Bool)] {
    let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
    var out: [(String, [Int], Bool)] = [("token_embd.weight", [c.vocabSize, c.hiddenSize], false)]
    for i in 0..<c.numHiddenLayers {
        let p = "blk.\(i)."
        out.append((p + "attn_norm.weight", [1, c.hiddenSize], true))
        out.append((p + "attn_q.weight", [q, c.hiddenSize], false))
        if c.attentionBias { out.append((p + "attn_q.bias", [1, q], true)) }
        out.append((p + "attn_k.weight", [kv, c.hiddenSize], false))
        if c.attentionBias { out.append((p + "attn_k.bias", [1, kv], true)) }
        out.append((p + "attn_v.weight", [kv, c.hiddenSize], false))
        if c.attentionBias { out.append((p + "attn_v.bias", [1, kv], true)) }
        out.append((p + "attn_output.weight", [c.hiddenSize, q], false))
        out.append((p + "ffn_norm.weight", [1, c.hiddenSize], true))
        out.append((p + "ffn_gate.weight", [c.intermediateSize, c.hiddenSize], false))
        out.append((p + "ffn_up.weight", [c.intermediateSize, c.hiddenSize], false))
        out.append((p + "ffn_down.weight", [c.hiddenSize, c.intermediateSize], false))
    }
    out.append(("output_norm.weight", [1, c.hiddenSize], true))
    if !c.tieWordEmbeddings { out.append(("output.weight", [c.vocabSize, c.hiddenSize], false)) }
    return out
}

/// Orders `found` as `expectedTensors` lists them; throws naming a missing tensor, a wrong shape or an
/// unexpected extra tensor.
func arrange(_ found: [String: SourceTensor], configuration: ModelConfiguration, source: String) throws -> [SourceTensor] {
    var out: [SourceTensor] = []
    let expected = expectedTensors(configuration)
    for e in expected {
        guard let t = found[e.name] else {
            throw ImportError("\(source): tensor '\(e.name)' is missing (expected shape \(e.shape) for this configuration)")
        }
        guard [t.rows, t.cols] == e.shape else {
            throw ImportError("\(source): tensor '\(e.name)' has shape [\(t.rows), \(t.cols)], expected \(e.shape) from the configuration")
        }
        guard t.type.traits != nil else {
            throw ImportError(
                "\(source): tensor '\(e.name)' has type \(t.type), which is not supported (supported: \(GGMLType.supportedNames))")
        }
        out.append(t)
    }
    let names = Set(expected.map(\.name))
    if let extra = found.keys.sorted().first(where: { !names.contains($0) }) {
        throw ImportError("\(source): unexpected tensor '\(extra)' (not part of a \(configuration.architecture) model as supported here)")
    }
    return out
}

/// Stop tokens: the declared EOS / end-of-turn ids plus any of the well-known end-of-turn tokens present.
func endOfTurnIds(tokens: [String], tokenTypes: [Int], declared: [Int?]) -> [Int] {
    let known = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>", "</s>"]
    var ids: [Int] = []
    for case let id? in declared where id >= 0 && id < tokens.count && !ids.contains(id) { ids.append(id) }
    var index: [String: Int] = [:]
    for name in known { index[name] = -1 }
    // Only special tokens count: "</s>" could be ordinary text in some vocabulary.
    for (i, t) in tokens.enumerated() where index[t] == -1 && (tokenTypes[i] == 3 || tokenTypes[i] == 4) { index[t] = i }
    for name in known { if let id = index[name], id >= 0, !ids.contains(id) { ids.append(id) } }
    return ids
}
