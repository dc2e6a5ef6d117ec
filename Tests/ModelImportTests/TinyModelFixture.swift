import Foundation
import TestSupport
import ModelImport
import Transformer

/// A tiny Llama or Qwen2 model built from seeded numbers, written both as a Hugging Face folder
/// (config.json, safetensors, tokenizer.json, tokenizer_config.json) and as the equivalent GGUF file
/// (llama.cpp's conventions: GGUF names, ne order, q/k rows permuted for Llama).
struct TinyModelFixture {
    enum Flavour { case llama, qwen2 }
    let flavour: Flavour
    let layers = 2, hidden = 64, heads = 4, kvHeads = 2, headDim = 16
    /// 256 gives ffn_down whole Q6_K superblocks (Int6ImportTests).
    var ffn = 96
    let tokens = ["a", "b", "c", "ab", "Ġa", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>"]
    /// One id beyond the tokenizer's: llama.cpp names it "[PAD9]", unused.
    var vocab: Int { tokens.count + 1 }
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"

    var tied: Bool { flavour == .llama }
    var bias: Bool { flavour == .qwen2 }

    /// HF tensor name → (shape, values), in HF layout ([out, in]).
    func weights() -> [(name: String, shape: [Int], values: [Float])] {
        var g = SeededGenerator(seed: flavour == .llama ? 1 : 2)
        var out: [(String, [Int], [Float])] = []
        func add(_ name: String, _ shape: [Int], norm: Bool = false) {
            let count = shape.reduce(1, *)
            // Values exactly representable in F16/BF16 so that every encoding holds the same numbers.
            let values = (0..<count).map { _ in Float(Int.random(in: -64...64, using: &g)) / 64 + (norm ? 1 : 0) }
            out.append((name, shape, values))
        }
        add("model.embed_tokens.weight", [vocab, hidden])
        for i in 0..<layers {
            let p = "model.layers.\(i)."
            add(p + "input_layernorm.weight", [hidden], norm: true)
            add(p + "self_attn.q_proj.weight", [heads * headDim, hidden])
            add(p + "self_attn.k_proj.weight", [kvHeads * headDim, hidden])
            add(p + "self_attn.v_proj.weight", [kvHeads * headDim, hidden])
            if bias {
                add(p + "self_attn.q_proj.bias", [heads * headDim])
                add(p + "self_attn.k_proj.bias", [kvHeads * headDim])
                add(p + "self_attn.v_proj.bias", [kvHeads * headDim])
            }
            add(p + "self_attn.o_proj.weight", [hidden, heads * headDim])
            add(p + "post_attention_layernorm.weight", [hidden], norm: true)
            add(p + "mlp.gate_proj.weight", [ffn, hidden])
            add(p + "mlp.up_proj.weight", [ffn, hidden])
            add(p + "mlp.down_proj.weight", [hidden, ffn])
        }
        add("model.norm.weight", [hidden], norm: true)
        if !tied { add("lm_head.weight", [vocab, hidden]) }
        return out
    }

    /// llama.cpp's `permute` for q/k of Llama GGUF files: within each head, row j·D/2 + i moves to 2i + j.
    static func permuteRows(_ w: [Float], rows: Int, cols: Int, heads: Int) -> [Float] {
        let d = rows / heads
        var out = w
        for h in 0..<heads {
            for i in 0..<d / 2 {
                for j in 0..<2 {
                    let from = h * d + j * (d / 2) + i, to = h * d + 2 * i + j
                    out[to * cols..<(to + 1) * cols] = w[from * cols..<(from + 1) * cols]
                }
            }
        }
        return out
    }

    // MARK: Hugging Face folder

    /// HF storage type: Llama in F16, Qwen2 in BF16 (norms in F32), Qwen2 sharded in two files.
    func writeHuggingFace(to folder: String) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: folder)
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let config: [String: Any] = [
            "architectures": [flavour == .llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM"],
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kvHeads, "intermediate_size": ffn, "vocab_size": vocab,
            "rope_theta": flavour == .llama ? 500_000.0 : 1_000_000.0, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 2048, "tie_word_embeddings": tied, "hidden_act": "silu",
            "rope_scaling": NSNull(), "torch_dtype": "bfloat16",
        ]
        try write(json: config, to: folder + "/config.json")

        let all = weights()
        let dtype = flavour == .llama ? "F16" : "BF16"
        if flavour == .qwen2 {
            let half = all.count / 2
            try writeSafeTensors(Array(all[..<half]), dtype: dtype, to: folder + "/model-00001-of-00002.safetensors")
            try writeSafeTensors(Array(all[half...]), dtype: dtype, to: folder + "/model-00002-of-00002.safetensors")
            var map: [String: String] = [:]
            for (i, w) in all.enumerated() {
                map[w.name] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"
            }
            try write(json: ["metadata": ["total_size": 0], "weight_map": map], to: folder + "/model.safetensors.index.json")
        } else {
            try writeSafeTensors(all, dtype: dtype, to: folder + "/model.safetensors")
        }

        let special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        var vocabMap: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where !special.contains(t) && t != "<tool_call>" { vocabMap[t] = i }
        let added: [[String: Any]] = tokens.enumerated().compactMap { i, t in
            guard special.contains(t) || t == "<tool_call>" else { return nil }
            return [
                "id": i, "content": t, "special": t != "<tool_call>", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false,
            ]
        }
        let regex =
            flavour == .llama
            ? "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
            : "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
        // Merges in the older "a b" form for Llama, the newer ["a", "b"] form for Qwen2.
        let merges: [Any] = flavour == .llama ? ["a b"] : [["a", "b"]]
        let tokenizer: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false],
                    ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false],
                ],
            ],
            "model": ["type": "BPE", "vocab": vocabMap, "merges": merges, "byte_fallback": false],
        ]
        try write(json: tokenizer, to: folder + "/tokenizer.json")
        var tokenizerConfig: [String: Any] = ["chat_template": template, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"]
        if flavour == .llama {
            tokenizerConfig["bos_token"] = ["content": "<|im_start|>", "special": true]
            tokenizerConfig["add_bos_token"] = true
        } else {
            tokenizerConfig["bos_token"] = NSNull()
            tokenizerConfig["add_bos_token"] = false
        }
        try write(json: tokenizerConfig, to: folder + "/tokenizer_config.json")
    }

    func write(json: [String: Any], to path: String) throws {
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
    }

    func encode(_ values: [Float], dtype: String) -> [UInt8] {
        switch dtype {
        case "F32": return values.flatMap { le($0.bitPattern) }
        case "F16": return values.flatMap { le(Float16($0).bitPattern) }
        default: return values.flatMap { le(UInt16($0.bitPattern >> 16)) }
        }
    }

    func writeSafeTensors(_ tensors: [(name: String, shape: [Int], values: [Float])], dtype: String, to path: String) throws {
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var data: [UInt8] = []
        for t in tensors {
            let type = t.shape.count == 1 ? "F32" : dtype  // norms and biases in F32, as many checkpoints ship them
            let bytes = encode(t.values, dtype: type)
            header[t.name] = ["dtype": type, "shape": t.shape, "data_offsets": [data.count, data.count + bytes.count]]
            data += bytes
        }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        try Data(le(UInt64(json.count)) + json + data).write(to: URL(fileURLWithPath: path))
    }

    // MARK: GGUF

    func writeGGUF(to path: String, permuteQK: Bool = true) throws {
        try ggufBuilder(permuteQK: permuteQK).write(to: path)
    }

    /// `permuteQK: false` writes a deliberately wrong Llama GGUF (negative control for the tests).
    func ggufBuilder(permuteQK: Bool = true) throws -> GGUFBuilder {
        var b = GGUFBuilder()
        let arch = flavour == .llama ? "llama" : "qwen2"
        b.set("general.architecture", .string(arch))
        b.set("general.name", .string("tiny \(arch)"))
        b.set("\(arch).block_count", .uint32(UInt32(layers)))
        b.set("\(arch).context_length", .uint32(2048))
        b.set("\(arch).embedding_length", .uint32(UInt32(hidden)))
        b.set("\(arch).feed_forward_length", .uint32(UInt32(ffn)))
        b.set("\(arch).attention.head_count", .uint32(UInt32(heads)))
        b.set("\(arch).attention.head_count_kv", .uint32(UInt32(kvHeads)))
        b.set("\(arch).rope.freq_base", .float32(flavour == .llama ? 500_000 : 1_000_000))
        b.set("\(arch).attention.layer_norm_rms_epsilon", .float32(1e-5))
        if flavour == .llama { b.set("\(arch).rope.dimension_count", .uint32(UInt32(headDim))) }
        b.set("tokenizer.ggml.model", .string("gpt2"))
        b.set("tokenizer.ggml.pre", .string(flavour == .llama ? "llama3" : "qwen2"))
        b.set("tokenizer.ggml.tokens", .array(.string(tokens + ["[PAD\(tokens.count)]"])))
        b.set("tokenizer.ggml.token_type", .array(.int32([1, 1, 1, 1, 1, 3, 3, 3, 4, 5])))
        b.set("tokenizer.ggml.merges", .array(.string(["a b"])))
        b.set("tokenizer.ggml.eos_token_id", .uint32(7))
        b.set("tokenizer.ggml.padding_token_id", .uint32(5))
        if flavour == .llama { b.set("tokenizer.ggml.bos_token_id", .uint32(6)) }
        b.set("tokenizer.ggml.add_bos_token", .bool(flavour == .llama))
        b.set("tokenizer.chat_template", .string(template))
        let type: GGMLType = flavour == .llama ? .F16 : .BF16
        for w in weights() {
            let name = try XCTUnwrapName(w.name)
            var values = w.values
            if permuteQK && flavour == .llama && (name.hasSuffix("attn_q.weight") || name.hasSuffix("attn_k.weight")) {
                let h = name.hasSuffix("attn_q.weight") ? heads : kvHeads
                values = Self.permuteRows(values, rows: w.shape[0], cols: w.shape[1], heads: h)
            }
            b.add(name, dimensions: w.shape.reversed(), floats: values, as: w.shape.count == 1 ? .F32 : type)
        }
        return b
    }

    func XCTUnwrapName(_ hf: String) throws -> String {
        guard let name = try HuggingFaceFolder.sarvamName(hf) else { throw ImportError("no name for \(hf)") }
        return name
    }
}
