import Foundation
import Tokenizer
import Transformer

/// A Hugging Face model folder: config.json, model.safetensors (or shards listed in
/// model.safetensors.index.json), tokenizer.json, tokenizer_config.json (optional: chat template,
/// BOS/EOS), generation_config.json (optional: extra EOS ids).
///
/// Hugging Face checkpoints keep q/k rows in their natural order and apply RoPE with `rotate_half`,
/// i.e. on pairs (i, i + headDim/2): the imported model uses ropeLayout "halves" for Llama and Qwen2
/// alike (llama.cpp instead permutes Llama q/k rows at conversion and rotates interleaved pairs; both
/// compute the same thing, see HuggingFaceImportTests).
public struct HuggingFaceFolder {
    public let path: String
    let folder: URL

    public init(path: String) throws {
        self.path = path
        folder = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("config.json").path) else {
            throw ImportError("\(path): no config.json (expected a Hugging Face model folder)")
        }
    }

    func readJSON(_ name: String, required: Bool) throws -> [String: Any]? {
        let url = folder.appendingPathComponent(name)
        guard let data = try? Data(contentsOf: url) else {
            if required { throw ImportError("\(path): cannot read \(name)") }
            return nil
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ImportError("\(path)/\(name): not a JSON object")
        }
        return object
    }

    public func importModel() throws -> ImportedModel {
        let config = try readJSON("config.json", required: true)!
        let tensors = try loadTensors()
        let configuration = try modelConfiguration(config, tensors: tensors)
        let tokenizerJSON = try readJSON("tokenizer.json", required: true)!
        let tokenizerConfig = try readJSON("tokenizer_config.json", required: false) ?? [:]
        let generationConfig = try readJSON("generation_config.json", required: false) ?? [:]
        let tokenizer = try tokenizerDescription(
            tokenizerJSON, config: tokenizerConfig, generation: generationConfig,
            vocabSize: configuration.vocabSize)
        var found: [String: SourceTensor] = [:]
        for (hfName, t) in tensors {
            guard let name = try Self.sarvamName(hfName) else { continue }
            found[name] = t.file.sourceTensor(t.entry, sarvamName: name)
        }
        // Tied checkpoints sometimes still carry lm_head.weight (a copy of the embedding).
        if configuration.tieWordEmbeddings { found["output.weight"] = nil }
        let arranged = try arrange(found, configuration: configuration, source: path)
        return ImportedModel(
            configuration: configuration, tokenizer: tokenizer, chatTemplate: try chatTemplate(tokenizerConfig),
            source: "Hugging Face \(folder.lastPathComponent) (\(Set(tensors.values.map { $0.file.path }).count) safetensors files)",
            tensors: arranged)
    }

    // MARK: tensors

    struct Located { let file: SafeTensorsFile; let entry: SafeTensorsEntry }

    func loadTensors() throws -> [String: Located] {
        var files: [String] = []
        if let index = try readJSON("model.safetensors.index.json", required: false) {
            guard let map = index["weight_map"] as? [String: String] else {
                throw ImportError("\(path)/model.safetensors.index.json: no weight_map object")
            }
            files = Array(Set(map.values)).sorted()
        } else {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            files = names.filter { $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !files.isEmpty else { throw ImportError("\(path): no .safetensors files") }
        var out: [String: Located] = [:]
        for name in files {
            let file = try SafeTensorsFile(path: folder.appendingPathComponent(name).path)
            for (tensorName, entry) in file.entries {
                guard out[tensorName] == nil else { throw ImportError("\(path): tensor '\(tensorName)' appears in two shards") }
                out[tensorName] = Located(file: file, entry: entry)
            }
        }
        return out
    }

    /// Hugging Face Llama/Qwen2 tensor names → Sarvam (GGUF) names; nil for tensors to skip.
    public static func sarvamName(_ name: String) throws -> String? {
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        let parts = name.split(separator: ".").map(String.init)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else {
            throw ImportError("unexpected tensor '\(name)' (not part of a Llama/Qwen2 checkpoint as supported here)")
        }
        let rest = parts[3...].joined(separator: ".")
        if rest == "self_attn.rotary_emb.inv_freq" { return nil }  // recomputed from ropeTheta
        let map = [
            "input_layernorm.weight": "attn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
            "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
            "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
            "self_attn.o_proj.weight": "attn_output.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        ]
        guard let suffix = map[rest] else {
            throw ImportError("unexpected tensor '\(name)' (not part of a Llama/Qwen2 checkpoint as supported here)")
        }
        return "blk.\(layer).\(suffix)"
    }

    // MARK: configuration

    func modelConfiguration(_ c: [String: Any], tensors: [String: Located]) throws -> ModelConfiguration {
        func fail(_ message: String) -> ImportError { ImportError("\(path)/config.json: \(message)") }
        func int(_ key: String) throws -> Int? {
            guard let v = c[key], !(v is NSNull) else { return nil }
            guard let n = v as? Int else { throw fail("'\(key)' should be an integer, found \(v)") }
            return n
        }
        func requiredInt(_ key: String) throws -> Int {
            guard let v = try int(key) else { throw fail("'\(key)' is missing") }
            return v
        }
        func double(_ key: String) throws -> Double? {
            guard let v = c[key], !(v is NSNull) else { return nil }
            guard let n = v as? Double else { throw fail("'\(key)' should be a number, found \(v)") }
            return n
        }
        let architectures = c["architectures"] as? [String] ?? []
        let architecture: ModelConfiguration.Architecture
        switch architectures.first {
        case "LlamaForCausalLM": architecture = .llama
        case "Qwen2ForCausalLM": architecture = .qwen2
        default:
            throw fail(
                "architecture \(architectures.first.map { "'\($0)'" } ?? "(none)") is not supported (supported: LlamaForCausalLM, Qwen2ForCausalLM)"
            )
        }
        if let scaling = c["rope_scaling"], !(scaling is NSNull) {
            let type = (scaling as? [String: Any]).flatMap { ($0["rope_type"] ?? $0["type"]) as? String } ?? "\(scaling)"
            throw fail("RoPE scaling '\(type)' is not supported")
        }
        if let act = c["hidden_act"] as? String, act != "silu" {
            throw fail("hidden_act '\(act)' is not supported (expected silu)")
        }
        if c["use_sliding_window"] as? Bool == true { throw fail("sliding-window attention is not supported") }
        let hidden = try requiredInt("hidden_size"), heads = try requiredInt("num_attention_heads")
        guard heads > 0 else { throw fail("'num_attention_heads' is \(heads), expected a positive number") }
        let configuration = ModelConfiguration(
            architecture: architecture,
            numHiddenLayers: try requiredInt("num_hidden_layers"),
            hiddenSize: hidden,
            numAttentionHeads: heads,
            numKeyValueHeads: try int("num_key_value_heads") ?? heads,
            headDim: try int("head_dim") ?? hidden / heads,
            intermediateSize: try requiredInt("intermediate_size"),
            vocabSize: try requiredInt("vocab_size"),
            ropeTheta: Float(try double("rope_theta") ?? 10_000),
            ropeLayout: .halves,
            rmsNormEps: Float(try double("rms_norm_eps") ?? 1e-6),
            maxPositionEmbeddings: try int("max_position_embeddings") ?? 4096,
            tieWordEmbeddings: c["tie_word_embeddings"] as? Bool ?? false,
            attentionBias: tensors["model.layers.0.self_attn.q_proj.bias"] != nil)
        do { try configuration.validate() } catch { throw fail("\(error)") }
        return configuration
    }

    // MARK: tokenizer

    func tokenizerDescription(
        _ json: [String: Any], config: [String: Any], generation: [String: Any], vocabSize: Int
    ) throws -> TokenizerDescription {
        func fail(_ message: String) -> ImportError { ImportError("\(path)/tokenizer.json: \(message)") }
        guard let model = json["model"] as? [String: Any] else { throw fail("no 'model' object") }
        let type = model["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw fail("tokenizer model '\(type)' is not supported (expected BPE)") }
        guard let vocab = model["vocab"] as? [String: Int] else { throw fail("model.vocab should map token text to ids") }
        let added = (json["added_tokens"] as? [[String: Any]]) ?? []
        var maxId = vocab.values.max() ?? -1
        for t in added { if let id = t["id"] as? Int { maxId = max(maxId, id) } }
        guard maxId < 1 << 24 else { throw fail("token id \(maxId) is implausibly large") }
        // Like llama.cpp: the vocabulary spans the embedding's rows; ids no token uses become "[PAD<id>]", unused.
        let count = max(maxId + 1, vocabSize)
        var tokens: [String?] = Array(repeating: nil, count: count)
        var types = [Int](repeating: 1, count: count)
        for (text, id) in vocab {
            guard id >= 0 else { throw fail("token '\(text)' has negative id \(id)") }
            tokens[id] = text
        }
        for t in added {
            guard let id = t["id"] as? Int, id >= 0, let content = t["content"] as? String else {
                throw fail("malformed added_tokens entry \(t)")
            }
            tokens[id] = content
            types[id] = (t["special"] as? Bool ?? false) ? 3 : 4
        }
        for i in 0..<count where tokens[i] == nil {
            tokens[i] = "[PAD\(i)]"
            types[i] = 5
        }
        let texts = tokens.map { $0! }
        var index: [String: Int] = [:]
        for (i, t) in texts.enumerated() where index[t] == nil { index[t] = i }

        let merges: [String] = try (model["merges"] as? [Any] ?? []).map { m in
            if let s = m as? String { return s }
            if let pair = m as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
            throw fail("merge \(m) is neither \"a b\" nor [\"a\", \"b\"]")
        }

        // Byte-level BPE (GPT-2 family) vs SentencePiece-style BPE (Llama 2: ▁ for spaces, byte fallback).
        let stages = Self.fields(json["pre_tokenizer"] as Any) + Self.fields(json["normalizer"] as Any)
        let stageTypes = Set(stages.filter { $0.key == "type" }.compactMap { $0.value as? String })
        let isSentencePiece = (model["byte_fallback"] as? Bool ?? false) || stageTypes.contains("Metaspace")
        var scores: [Float] = []
        var pre = "default"
        if isSentencePiece {
            for (i, t) in texts.enumerated() where types[i] == 1 {
                if t.count == 6 && t.hasPrefix("<0x") && t.hasSuffix(">") { types[i] = 6 }
            }
            if let unk = model["unk_token"] as? String, let id = index[unk] { types[id] = 2 }
            // tokenizer.json has no SentencePiece scores; pieces are ordered by merge priority, so the
            // negative id reproduces the ranking (what llama.cpp's converter assumes for such vocabularies).
            scores = (0..<count).map { types[$0] == 1 ? -Float($0) : 0 }
        } else {
            pre = Self.preTokenizerKind(stages)
        }
        func tokenId(_ key: String) -> Int? {
            let value = config[key]
            let text = (value as? String) ?? ((value as? [String: Any])?["content"] as? String)
            return text.flatMap { index[$0] }
        }
        let bos = tokenId("bos_token"), eos = tokenId("eos_token")
        var declared: [Int?] = [eos]
        if let ids = generation["eos_token_id"] as? [Int] {
            declared += ids.map { $0 }
        } else if let id = generation["eos_token_id"] as? Int {
            declared.append(id)
        }
        var addBos = config["add_bos_token"] as? Bool
        if addBos == nil, let bos, let post = json["post_processor"] {
            addBos = "\(post)".contains(texts[bos])
        }
        // SentencePiece prepends ▁ through a Prepend normalizer (Llama 2) or a Metaspace pre-tokenizer.
        let addSpacePrefix =
            isSentencePiece
            && (stageTypes.contains("Prepend")
                || stages.contains { $0.key == "prepend_scheme" && ($0.value as? String) != "never" }
                || stages.contains { $0.key == "add_prefix_space" && ($0.value as? Bool) == true })
        return TokenizerDescription(
            kind: isSentencePiece ? .sentencePiece : .byteLevelBPE,
            preTokenizer: pre,
            tokens: texts,
            tokenTypes: types,
            merges: merges,
            scores: scores,
            bosTokenId: bos,
            eosTokenId: eos,
            padTokenId: tokenId("pad_token"),
            unknownTokenId: tokenId("unk_token") ?? (model["unk_token"] as? String).flatMap { index[$0] },
            endOfTurnTokenIds: endOfTurnIds(tokens: texts, tokenTypes: types, declared: declared),
            addBosToken: addBos ?? isSentencePiece,
            addSpacePrefix: addSpacePrefix)
    }

    /// Every (key, value) pair inside a JSON value, depth first (pre-tokenizers nest in Sequence stages).
    static func fields(_ value: Any) -> [(key: String, value: Any)] {
        var out: [(key: String, value: Any)] = []
        func walk(_ v: Any) {
            if let object = v as? [String: Any] {
                for (k, x) in object.sorted(by: { $0.key < $1.key }) { out.append((k, x)); walk(x) }
            } else if let array = v as? [Any] {
                array.forEach(walk)
            }
        }
        walk(value)
        return out
    }

    /// The pre-tokenizer family from its split regex (the names GGUF's `tokenizer.ggml.pre` uses).
    static func preTokenizerKind(_ stages: [(key: String, value: Any)]) -> String {
        let patterns = stages.filter { $0.key == "Regex" || $0.key == "String" }.compactMap { $0.value as? String }
        if patterns.contains(where: { $0.contains("\\p{N}{1,3}") }) { return "llama3" }
        if patterns.contains(where: { $0.contains("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+") && $0.contains("\\p{N}") }) { return "qwen2" }
        if stages.contains(where: { $0.key == "type" && ($0.value as? String) == "ByteLevel" }) { return "gpt2" }
        return "default"
    }

    func chatTemplate(_ config: [String: Any]) throws -> String? {
        if let t = config["chat_template"] as? String { return t }
        if let list = config["chat_template"] as? [[String: Any]] {
            let chosen = list.first { $0["name"] as? String == "default" } ?? list.first
            return chosen?["template"] as? String
        }
        if let data = try? Data(contentsOf: folder.appendingPathComponent("chat_template.jinja")) {
            return String(decoding: data, as: UTF8.self)
        }
        return nil
    }
}
