import Tensor

/// Which Sarvam format each tensor gets (`sarvam convert --quant`).
///
/// `auto` (the default) keeps the source's precision instead of choosing a new one, because every
/// GGUF file already encodes its author's size/quality trade-off (Q4_K_M puts Q6_K/Q8_0 where
/// precision matters, e.g. the output projection and some ffn_down) and re-quantizing can only lose:
///   Q8_0, Q5_0, Q4_0  → int8 exactly (int8 is Q8_0's block; 5- and 4-bit values fit in 8)
///   Q5_1, Q4_1, Q5_K  → int8 (requantized per 32; int8's error is far below the source's)
///   Q6_K              → int8 (exact where its sub-block scales allow, else requantized per 32)
///   Q4_K              → int4 exactly (int4 is Q4_K with a kernel-friendly nibble order)
///   F16, BF16 → f16, F32 → f32 (BF16 or F32 values beyond Float16's range keep f32)
/// `int8`, `f16`, `f32` force that format for every matrix (exact where the source allows).
/// `int4` follows llama.cpp's Q4_K_M mix: int4 for most matrices, but the ones whose errors hurt
/// most — the output projection, `attn_v` and `ffn_down` — stay int8 unless the source already
/// holds them in Q4_K (then int4, exactly); the token embedding stays int8 too, since decoding reads
/// one row of it per token, so int4 would save disk but no time. Perplexity of gpl-3.txt (ctx 512,
/// default model; int8: 5.312, llama.cpp: 5.310): every matrix int4 6.23, the Q4_K_M mix 5.667,
/// with the embedding in int8 5.638. (Also keeping attn_q/attn_k, or everything but ffn_gate/up, in
/// int8 measured worse: 5.745 and 5.708; so did a least-squares int4 quantizer with 27% less weight
/// error, 5.95: in this mix, less weight error has not meant lower perplexity; see Int4Quantizer.swift.)
/// Norms and biases always stay f32: they are tiny and sensitive.
public enum QuantizationPolicy: String, CaseIterable, Sendable {
    case auto, int8, int4, f16, f32

    public var summary: String {
        switch self {
        case .auto:
            return "auto: matrices keep the source precision (Q8_0/Q5_0/Q4_0 → int8 exact, Q6_K → int8 exact where the scales allow, Q5_1/Q4_1/Q5_K → int8, Q4_K → int4 exact, F16/BF16 → f16, F32 → f32); norms and biases f32"
        case .int8, .int4, .f16, .f32:
            if self == .int4 {
                return "int4: matrices in int4 except output, attn_v and ffn_down in int8 unless their source is Q4_K (as Q4_K_M); norms and biases f32"
            }
            return "\(rawValue): every matrix in \(rawValue) (exact where the source allows); norms and biases f32"
        }
    }

    /// The format a tensor is stored in. `fitsFloat16` says whether every value is within ±65504
    /// (asked only when a float source would go to f16).
    public func format(for tensor: SourceTensor, fitsFloat16: () -> Bool) -> WeightFormat {
        if tensor.isVector { return .f32 }
        var target: WeightFormat
        switch self {
        case .auto:
            switch tensor.type {
            case .Q4_K: target = .int4
            case .F16: target = .f16
            case .BF16: target = .f16
            case .F32: target = .f32
            default: target = .int8
            }
        case .int8: target = .int8
        case .int4: target = Self.isPrecisionSensitive(tensor.name) && tensor.type != .Q4_K ? .int8 : .int4
        case .f16: target = .f16
        case .f32: target = .f32
        }
        // Quantized formats need whole groups of 32; such a matrix stays in half precision instead.
        if (target == .int8 || target == .int4) && tensor.cols % 32 != 0 { target = .f16 }
        if target == .f16 && tensor.type != .F16 && !fitsFloat16() { target = .f32 }
        return target
    }

    /// Matrices that stay int8 under `int4` unless their source is Q4_K (see the type's comment).
    static func isPrecisionSensitive(_ name: String) -> Bool {
        name == "output.weight" || name == "token_embd.weight"
            || name.hasSuffix(".attn_v.weight") || name.hasSuffix(".ffn_down.weight")
    }
}
