// ggml tensor types and their block layouts. Layouts from the GGUF specification and ggml's block
// structs (ggml-common.h); each supported type is declared once in `GGMLType.traits` below: block size
// (weights per block), bytes per block, and the dequantization of `count` blocks to Float32.
//
// Notation: `d`, `dmin`, `m` are Float16 scales stored little-endian; q are the stored integers.
//   F32   1 weight, 4 bytes.        F16 / BF16: 1 weight, 2 bytes.
//   Q4_0  32 weights, 18 bytes: d, qs[16]          w[i] = d·(lo(qs[i]) − 8), w[i+16] = d·(hi(qs[i]) − 8)
//   Q4_1  32 weights, 20 bytes: d, m, qs[16]       w = d·q + m
//   Q5_0  32 weights, 22 bytes: d, qh u32, qs[16]  q = nibble | (bit i (or i+16 for the high nibble) of qh) << 4;  w = d·(q − 16)
//   Q5_1  32 weights, 24 bytes: d, m, qh, qs[16]   w = d·q + m
//   Q8_0  32 weights, 34 bytes: d, qs[32] (int8)   w = d·q
//   Q4_K  256 weights, 144 bytes: d, dmin, scales[12] (8 six-bit scales + 8 six-bit mins), qs[128]
//         4 chunks of 32 bytes; chunk c holds group 2c in its low nibbles, group 2c+1 in its high ones;
//         w = (d·sc[j])·q − (dmin·m[j])
//   Q5_K  256 weights, 176 bytes: d, dmin, scales[12], qh[32], qs[128]; like Q4_K plus a fifth bit from qh
//         (bit 2c of qh[l] for group 2c, bit 2c+1 for group 2c+1)
//   Q6_K  256 weights, 210 bytes: ql[128], qh[64], scales[16] (int8), d; 16 sub-blocks of 16 weights,
//         q = 4 low bits from ql | 2 high bits from qh, minus 32;  w = (d·sc[s])·q
// The float operations are written in ggml's (and gguf-py's) order so that results match bit for bit.

public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9
    case Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15
    case IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23
    case I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39

    public var description: String { name }
    /// The spec's spelling (`Q4_K`), for messages.
    public var name: String {
        switch self {
        case .F32: "F32"
        case .F16: "F16"
        case .Q4_0: "Q4_0"
        case .Q4_1: "Q4_1"
        case .Q5_0: "Q5_0"
        case .Q5_1: "Q5_1"
        case .Q8_0: "Q8_0"
        case .Q8_1: "Q8_1"
        case .Q2_K: "Q2_K"
        case .Q3_K: "Q3_K"
        case .Q4_K: "Q4_K"
        case .Q5_K: "Q5_K"
        case .Q6_K: "Q6_K"
        case .Q8_K: "Q8_K"
        case .IQ2_XXS: "IQ2_XXS"
        case .IQ2_XS: "IQ2_XS"
        case .IQ3_XXS: "IQ3_XXS"
        case .IQ1_S: "IQ1_S"
        case .IQ4_NL: "IQ4_NL"
        case .IQ3_S: "IQ3_S"
        case .IQ2_S: "IQ2_S"
        case .IQ4_XS: "IQ4_XS"
        case .I8: "I8"
        case .I16: "I16"
        case .I32: "I32"
        case .I64: "I64"
        case .F64: "F64"
        case .IQ1_M: "IQ1_M"
        case .BF16: "BF16"
        case .TQ1_0: "TQ1_0"
        case .TQ2_0: "TQ2_0"
        case .MXFP4: "MXFP4"
        }
    }

    public struct Traits: Sendable {
        public let blockSize: Int
        public let bytesPerBlock: Int
        /// Dequantizes `blocks` consecutive blocks from `src` into `dst` (blocks × blockSize floats).
        public let dequantize: @Sendable (_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) -> Void
    }

    /// The one table of supported types. A type missing here is refused by name.
    public var traits: Traits? {
        switch self {
        case .F32: Traits(blockSize: 1, bytesPerBlock: 4, dequantize: dequantizeF32)
        case .F16: Traits(blockSize: 1, bytesPerBlock: 2, dequantize: dequantizeF16)
        case .BF16: Traits(blockSize: 1, bytesPerBlock: 2, dequantize: dequantizeBF16)
        case .Q4_0: Traits(blockSize: 32, bytesPerBlock: 18, dequantize: dequantizeQ4_0)
        case .Q4_1: Traits(blockSize: 32, bytesPerBlock: 20, dequantize: dequantizeQ4_1)
        case .Q5_0: Traits(blockSize: 32, bytesPerBlock: 22, dequantize: dequantizeQ5_0)
        case .Q5_1: Traits(blockSize: 32, bytesPerBlock: 24, dequantize: dequantizeQ5_1)
        case .Q8_0: Traits(blockSize: 32, bytesPerBlock: 34, dequantize: dequantizeQ8_0)
        case .Q4_K: Traits(blockSize: 256, bytesPerBlock: 144, dequantize: dequantizeQ4_K)
        case .Q5_K: Traits(blockSize: 256, bytesPerBlock: 176, dequantize: dequantizeQ5_K)
        case .Q6_K: Traits(blockSize: 256, bytesPerBlock: 210, dequantize: dequantizeQ6_K)
        default: nil
        }
    }

    public static var supported: [GGMLType] { allCases.filter { $0.traits != nil } }
    public static var supportedNames: String { supported.map(\.name).joined(separator: ", ") }

    /// Bytes of one row of `cols` weights (cols a multiple of the block size).
    public func rowBytes(cols: Int) -> Int {
        guard let t = traits else { return 0 }
        return cols / t.blockSize * t.bytesPerBlock
    }

    public func dequantizeRow(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, cols: Int) {
        guard let t = traits else { preconditionFailure("dequantizeRow on unsupported type \(self)") }
        t.dequantize(src, dst, cols / t.blockSize)
    }
}

@inline(__always) func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
}

@inline(__always) func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 { p.load(fromByteOffset: offset, as: UInt8.self) }

/// ggml's `get_scale_min_k4`: six-bit scale and min of group j (0..<8) from the 12 packed bytes.
@inline(__always) func scaleMinK4(_ s: UnsafeRawPointer, _ j: Int) -> (scale: UInt8, min: UInt8) {
    if j < 4 { return (byte(s, j) & 63, byte(s, j + 4) & 63) }
    return ((byte(s, j + 4) & 0xF) | ((byte(s, j - 4) >> 6) << 4), (byte(s, j + 4) >> 4) | ((byte(s, j) >> 6) << 4))
}

func dequantizeF32(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
}

func dequantizeF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { dst[i] = half(src, 2 * i) }
}

func dequantizeBF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n {
        dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
    }
}

func dequantizeQ4_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 18, y = dst + b * 32
        let d = half(p, 0)
        for i in 0..<16 {
            let q = byte(p, 2 + i)
            y[i] = d * Float(Int(q & 0xF) - 8)
            y[i + 16] = d * Float(Int(q >> 4) - 8)
        }
    }
}

func dequantizeQ4_1(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 20, y = dst + b * 32
        let d = half(p, 0), m = half(p, 2)
        for i in 0..<16 {
            let q = byte(p, 4 + i)
            y[i] = Float(q & 0xF) * d + m
            y[i + 16] = Float(q >> 4) * d + m
        }
    }
}

/// Q5_0's 5-bit values (0...31) of one block: the caller subtracts 16.
@inline(__always) func q5Values(_ qh: UInt32, _ qs: UnsafeRawPointer, _ i: Int) -> (UInt8, UInt8) {
    let q = byte(qs, i)
    let h0 = UInt8((qh >> UInt32(i)) & 1) << 4
    let h1 = UInt8((qh >> UInt32(i + 16)) & 1) << 4
    return ((q & 0xF) | h0, (q >> 4) | h1)
}

func dequantizeQ5_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 22, y = dst + b * 32
        let d = half(p, 0)
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        for i in 0..<16 {
            let (q0, q1) = q5Values(qh, p + 6, i)
            y[i] = d * Float(Int(q0) - 16)
            y[i + 16] = d * Float(Int(q1) - 16)
        }
    }
}

func dequantizeQ5_1(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 24, y = dst + b * 32
        let d = half(p, 0), m = half(p, 2)
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        for i in 0..<16 {
            let (q0, q1) = q5Values(qh, p + 8, i)
            y[i] = Float(q0) * d + m
            y[i + 16] = Float(q1) * d + m
        }
    }
}

func dequantizeQ8_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 34, y = dst + b * 32
        let d = half(p, 0)
        for i in 0..<32 { y[i] = d * Float(p.load(fromByteOffset: 2 + i, as: Int8.self)) }
    }
}

func dequantizeQ4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 144, y = dst + b * 256
        let d = half(p, 0), dmin = half(p, 2)
        let scales = p + 4, qs = p + 16
        for c in 0..<4 {
            let (s0, m0) = scaleMinK4(scales, 2 * c)
            let (s1, m1) = scaleMinK4(scales, 2 * c + 1)
            let d0 = d * Float(s0), min0 = dmin * Float(m0)
            let d1 = d * Float(s1), min1 = dmin * Float(m1)
            for l in 0..<32 {
                let q = byte(qs, 32 * c + l)
                y[64 * c + l] = d0 * Float(q & 0xF) - min0
                y[64 * c + 32 + l] = d1 * Float(q >> 4) - min1
            }
        }
    }
}

func dequantizeQ5_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 176, y = dst + b * 256
        let d = half(p, 0), dmin = half(p, 2)
        let scales = p + 4, qh = p + 16, qs = p + 48
        for c in 0..<4 {
            let (s0, m0) = scaleMinK4(scales, 2 * c)
            let (s1, m1) = scaleMinK4(scales, 2 * c + 1)
            let d0 = d * Float(s0), min0 = dmin * Float(m0)
            let d1 = d * Float(s1), min1 = dmin * Float(m1)
            for l in 0..<32 {
                let q = byte(qs, 32 * c + l), h = byte(qh, l)
                let lo = (q & 0xF) | (((h >> UInt8(2 * c)) & 1) << 4)
                let hi = (q >> 4) | (((h >> UInt8(2 * c + 1)) & 1) << 4)
                y[64 * c + l] = d0 * Float(lo) - min0
                y[64 * c + 32 + l] = d1 * Float(hi) - min1
            }
        }
    }
}

/// Q6_K's signed 6-bit value (−32...31) of weight `i` (0..<256) of a block, and its sub-block (0..<16).
@inline(__always) func q6Value(_ p: UnsafeRawPointer, _ i: Int) -> (q: Int8, subBlock: Int) {
    // Two halves of 128 weights; in a half, run n (0...3) of 32 takes its low 4 bits from
    // ql[l] (n = 0, 2) or ql[l + 32] (n = 1, 3), low nibble for n < 2, high for n >= 2,
    // and its top 2 bits from qh[l] >> 2n.
    let h = i / 128, n = (i % 128) / 32, l = i % 32
    let ql = p + 64 * h, qh = p + 128 + 32 * h
    let packed = byte(ql, l + 32 * (n % 2))
    let lowBits = n < 2 ? packed & 0xF : packed >> 4
    let highBits = (byte(qh, l) >> UInt8(2 * n)) & 3
    return (Int8(Int(lowBits | (highBits << 4)) - 32), 8 * h + 2 * n + l / 16)
}

func dequantizeQ6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int) {
    for b in 0..<blocks {
        let p = src + b * 210, y = dst + b * 256
        let d = half(p, 208)
        for h in 0..<2 {
            let ql = p + 64 * h, qh = p + 128 + 32 * h, sc = p + 192 + 8 * h
            for l in 0..<32 {
                let s = l / 16
                let a = byte(ql, l), c = byte(ql, l + 32), hb = byte(qh, l)
                let q1 = Int((a & 0xF) | ((hb & 3) << 4)) - 32
                let q2 = Int((c & 0xF) | (((hb >> 2) & 3) << 4)) - 32
                let q3 = Int((a >> 4) | (((hb >> 4) & 3) << 4)) - 32
                let q4 = Int((c >> 4) | (((hb >> 6) & 3) << 4)) - 32
                let y0 = y + 128 * h
                y0[l] = d * Float(sc.load(fromByteOffset: s, as: Int8.self)) * Float(q1)
                y0[l + 32] = d * Float(sc.load(fromByteOffset: s + 2, as: Int8.self)) * Float(q2)
                y0[l + 64] = d * Float(sc.load(fromByteOffset: s + 4, as: Int8.self)) * Float(q3)
                y0[l + 96] = d * Float(sc.load(fromByteOffset: s + 6, as: Int8.self)) * Float(q4)
            }
        }
    }
}
