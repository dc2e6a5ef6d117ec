import Tensor

/// Which Sarvam format each tensor gets (`sarvam convert --quant`).
///
/// `auto` (the default) keeps the source's precision instead of choosing a new one, because every
/// GGUF file already encodes its author's size/quality trade-off (Q4_K_M puts Q6_K/Q8_0 where
/// precision matters, e.g. the output projection and some ffn_down) and re-quantizing can only lose:
///   Q8_0, Q4_0        → int8 exactly (int8 is Q8_0's block; 4-bit values fit in 8)
///   Q5_0              → int5 exactly (int5 holds Q5_0's values: 5.5 bits per weight, not int8's 8.5)
///   Q5_1, Q4_1, Q5_K  → int8 (requantized per 32; int8's error is far below the source's)
///   Q6_K              → int6 exactly (int6 holds Q6_K's values: 6.5625 bits per weight, not int8's 8.5)
///   Q4_K              → int4 exactly (int4 is Q4_K with a kernel-friendly nibble order)
///   F16, BF16 → f16, F32 → f32 (BF16 or F32 values beyond Float16's range keep f32)
/// `int8`, `f16`, `f32` force that format for every matrix (exact where the source allows; `int8`
/// gives Q6_K the int8 repack, exact where its sub-block scales allow, else requantized per 32).
/// `int4` starts from llama.cpp's Q4_K_M mix: int4 for most matrices, but the ones whose errors
/// hurt most — the output projection, `attn_v` and `ffn_down` — stay int8 unless the source already
/// holds them in Q4_K or Q5_0 (then int4 or int5, exactly: the same values in fewer bytes); the
/// token embedding stays int8 (int5 from Q5_0) too, since decoding reads one row of it per
/// token, so int4 would save disk but no time. On top of that every matrix of the
/// first and the last layer (`blk.0.`, `blk.N-1.`) stays int8 on the same terms: the first layer's
/// errors pass through every layer above, the last's straight into the logits.
/// Most int4 matrices of the default model are requantized from the GGUF's Q5_0 (its 896-column
/// matrices cannot be k-quants), which loses more than Q4_K_M's own 4-bit choices did. Keeping the
/// whole first layer in int8 was the cheapest measured way to stay clearly within the int4
/// perplexity test's 6% of llama.cpp's; the last layer as well keeps the first-token top-5 equal to
/// the reference's (docs/decisions.md has the mixes measured and what was tried and dropped).
/// The summary is recorded in every converted file and `sarvam info --expect-policy` compares it
/// (tools/fetch-model converts again when it differs): change it whenever the mix changes.
/// Norms and biases always stay f32: they are tiny and sensitive.
public enum QuantizationPolicy: String, CaseIterable, Sendable {
    case auto, int8, int4, f16, f32

    public var summary: String {
        switch self {
        case .auto:
            return
                "auto: matrices keep the source precision (Q8_0/Q4_0 → int8 exact, Q5_0 → int5 exact, Q6_K → int6 exact, Q5_1/Q4_1/Q5_K → int8, Q4_K → int4 exact, F16/BF16 → f16, F32 → f32); norms and biases f32"
        case .int8, .int4, .f16, .f32:
            if self == .int4 {
                return
                    "int4: matrices in int4 except output, token_embd, attn_v, ffn_down and all of the first and last layers in int8, or exactly in int4/int5 when their source is Q4_K/Q5_0 (Q4_K_M's mix plus the first and last layers); norms and biases f32"
            }
            return "\(rawValue): every matrix in \(rawValue) (exact where the source allows); norms and biases f32"
        }
    }

    /// The format a tensor is stored in. `layers` is the model's layer count (`int4` keeps the last
    /// layer in int8: without it, only the first). `fitsFloat16` says whether every value is within
    /// ±65504 (asked only when a float source would go to f16).
    public func format(for tensor: SourceTensor, layers: Int? = nil, fitsFloat16: () -> Bool) -> WeightFormat {
        if tensor.isVector { return .f32 }
        var target: WeightFormat
        switch self {
        case .auto:
            switch tensor.type {
            case .Q4_K: target = .int4
            case .Q5_0: target = .int5
            case .Q6_K: target = .int6
            case .F16: target = .f16
            case .BF16: target = .f16
            case .F32: target = .f32
            default: target = .int8
            }
        case .int8: target = .int8
        case .int4:
            if Self.isPrecisionSensitive(tensor.name, layers: layers) {
                target = tensor.type == .Q4_K ? .int4 : tensor.type == .Q5_0 ? .int5 : .int8
            } else {
                target = .int4
            }
        case .f16: target = .f16
        case .f32: target = .f32
        }
        // int6 needs whole superblocks of 256 (always true of a Q6_K source); quantized formats need
        // whole groups of 32, else the matrix stays in half precision.
        if target == .int6 && tensor.cols % 256 != 0 { target = .int8 }
        if target.traits.isQuantized && tensor.cols % 32 != 0 { target = .f16 }
        if target == .f16 && tensor.type != .F16 && !fitsFloat16() { target = .f32 }
        return target
    }

    /// Matrices that keep 8 (or their source's exact 4 or 5) bits under `int4` (see the type's comment):
    /// Q4_K_M's sensitive kinds, the token embedding, and everything in the first and last layers.
    static func isPrecisionSensitive(_ name: String, layers: Int?) -> Bool {
        if name == "output.weight" || name == "token_embd.weight" || name.hasPrefix("blk.0.")
            || name.hasSuffix(".attn_v.weight") || name.hasSuffix(".ffn_down.weight")
        {
            return true
        }
        if let layers, layers > 1, name.hasPrefix("blk.\(layers - 1).") { return true }
        return false
    }
}
