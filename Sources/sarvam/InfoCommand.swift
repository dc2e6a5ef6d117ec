import ArgumentParser
import Foundation
import ModelImport
import Tensor
import Tokenizer
import Transformer

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Describe a Sarvam weight file; --verify checks every checksum.")

    @Option(help: "The Sarvam weight file.")
    var model: String

    @Flag(help: "Check every checksum (reads the whole file).")
    var verify = false

    @Flag(help: "Print the description as JSON.")
    var json = false

    @Option(
        help:
            "Fail unless the file was converted with this --quant policy as it is now defined (tools/fetch-model uses it to redo stale conversions)."
    )
    var expectPolicy: String?

    func validate() throws {
        if let name = expectPolicy, QuantizationPolicy(rawValue: name) == nil {
            throw ValidationError(
                "--expect-policy must be one of \(QuantizationPolicy.allCases.map(\.rawValue).joined(separator: ", ")), found '\(name)'")
        }
    }

    func run() throws {
        let file: WeightFile
        let tokenizer: TokenizerDescription
        do {
            file = try WeightFile.open(model, verify: verify)
            do {
                tokenizer = try TokenizerDescription.decodeJSON(file.description.tokenizer)
            } catch {
                throw WeightFileError(path: model, message: "tokenizer description is invalid: \(error)")
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode.failure
        }
        // A converted file records its policy's summary, which names the mix (see QuantizationPolicy).
        if let name = expectPolicy, let policy = QuantizationPolicy(rawValue: name), file.description.quantization != policy.summary {
            printError(
                "error: \(model) was converted with the policy \"\(file.description.quantization)\", expected the current \(name) policy \"\(policy.summary)\": convert it again"
            )
            throw ExitCode.failure
        }
        let report = WeightFileReport(file: file, tokenizer: tokenizer, verified: verify)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}

/// What `sarvam info` shows, as one value so that text and JSON say the same thing.
struct WeightFileReport: Encodable {
    var path: String
    var fileBytes: Int
    var model: ModelConfiguration
    var parameters: Int
    var bitsPerWeight: Double
    var tensorCount: Int
    /// Tensor group ("attn_q", "ffn_down", "norms", …) → formats and counts, e.g. "int8 ×24".
    var formats: [String: String]
    var tokenizer: TokenizerSummary
    var chatTemplate: String
    var source: String
    var quantization: String
    var checksums: String

    struct TokenizerSummary: Encodable {
        var kind: String
        var preTokenizer: String
        var tokens: Int
        var merges: Int
        var bosTokenId: Int?
        var eosTokenId: Int?
        var endOfTurnTokenIds: [Int]
        var addBosToken: Bool
    }

    init(file: WeightFile, tokenizer: TokenizerDescription, verified: Bool) {
        path = file.path
        fileBytes = file.fileSize
        model = file.description.model
        parameters = file.tensors.reduce(0) { $0 + $1.rows * $1.cols }
        bitsPerWeight = parameters > 0 ? Double(file.tensors.reduce(0) { $0 + $1.byteLength } * 8) / Double(parameters) : 0
        tensorCount = file.tensors.count
        var groups: [String: [WeightFormat: Int]] = [:]
        for t in file.tensors { groups[Self.group(t.name), default: [:]][t.format, default: 0] += 1 }
        formats = groups.mapValues { counts in
            counts.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) ×\($0.value)" }.joined(separator: ", ")
        }
        self.tokenizer = TokenizerSummary(
            kind: tokenizer.kind.rawValue, preTokenizer: tokenizer.preTokenizer, tokens: tokenizer.tokens.count,
            merges: tokenizer.merges.count, bosTokenId: tokenizer.bosTokenId, eosTokenId: tokenizer.eosTokenId,
            endOfTurnTokenIds: tokenizer.endOfTurnTokenIds, addBosToken: tokenizer.addBosToken)
        chatTemplate = Self.templateFamily(file.description.chatTemplate)
        source = file.description.source
        quantization = file.description.quantization
        checksums = verified ? "verified (xxh64)" : "not checked (use --verify)"
    }

    /// "blk.3.attn_q.weight" → "attn_q"; norms and biases each form one group.
    static func group(_ name: String) -> String {
        if name.hasSuffix("_norm.weight") { return "norms" }
        if name.hasSuffix(".bias") { return "biases" }
        var parts = name.split(separator: ".")
        if parts.first == "blk" { parts.removeFirst(2) }
        return parts.first.map(String.init) ?? name
    }

    static func templateFamily(_ template: String?) -> String {
        guard let t = template else { return "none" }
        if t.contains("<|im_start|>") { return "ChatML" }
        if t.contains("<|start_header_id|>") { return "Llama 3" }
        if t.contains("[INST]") { return "Llama 2" }
        return "custom"
    }

    var text: String {
        let m = model
        var lines = [
            "\(path): \(formatBytes(fileBytes)), \(tensorCount) tensors, checksums \(checksums)",
            "model:      \(m.architecture), \(m.numHiddenLayers) layers, hidden \(m.hiddenSize), heads \(m.numAttentionHeads) (kv \(m.numKeyValueHeads), dim \(m.headDim)), ffn \(m.intermediateSize), vocab \(m.vocabSize)",
            "            RoPE theta \(m.ropeTheta) (\(m.ropeLayout)), RMSNorm eps \(m.rmsNormEps), context \(m.maxPositionEmbeddings), tied embeddings \(m.tieWordEmbeddings), attention bias \(m.attentionBias)",
            String(format: "weights:    %@ parameters, %.2f bits/weight", formatCount(parameters), bitsPerWeight),
        ]
        for key in formats.keys.sorted() { lines.append("  \(key.padding(toLength: 12, withPad: " ", startingAt: 0)) \(formats[key]!)") }
        let tk = tokenizer
        lines.append(
            "tokenizer:  \(tk.kind) (pre \(tk.preTokenizer)), \(tk.tokens) tokens, \(tk.merges) merges, bos \(tk.bosTokenId.map(String.init) ?? "none"), eos \(tk.eosTokenId.map(String.init) ?? "none"), end of turn \(tk.endOfTurnTokenIds), add BOS \(tk.addBosToken)"
        )
        lines.append("chat:       \(chatTemplate) template")
        lines.append("source:     \(source)")
        lines.append("quant:      \(quantization)")
        return lines.joined(separator: "\n")
    }
}
