import Foundation
import ModelImport

/// One hand-built block per quantized type, with its values computed by hand from the GGUF spec's
/// formulas (written out here independently of the dequantizers under test).
enum HandBuiltBlocks {
    /// Q8_0: d = 0.5, q[i] = i − 16  →  w[i] = 0.5·(i − 16).
    static func q8_0() -> ([UInt8], [Float]) {
        let bytes = halfBits(0.5) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        return (bytes, (0..<32).map { 0.5 * Float($0 - 16) })
    }

    /// Q4_0: d = 2, qs[i] = i | (15 − i) << 4  →  w[i] = 2·(i − 8), w[i+16] = 2·(7 − i).
    static func q4_0() -> ([UInt8], [Float]) {
        let bytes = halfBits(2) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) }
        return (bytes, (0..<16).map { 2 * Float($0 - 8) } + (0..<16).map { 2 * Float(7 - $0) })
    }

    /// Q4_1: d = 0.25, m = −1, same nibbles  →  w[i] = 0.25·i − 1, w[i+16] = 0.25·(15 − i) − 1.
    static func q4_1() -> ([UInt8], [Float]) {
        let bytes = halfBits(0.25) + halfBits(-1) + (0..<16).map { UInt8($0 | ((15 - $0) << 4)) }
        return (bytes, (0..<16).map { 0.25 * Float($0) - 1 } + (0..<16).map { 0.25 * Float(15 - $0) - 1 })
    }

    /// Q5_0: d = 1, qh = 0x0000FFFF (fifth bit set for weights 0...15), qs[i] = i | i << 4
    ///   →  w[i] = (i + 16) − 16 = i,  w[i+16] = i − 16.
    static func q5_0() -> ([UInt8], [Float]) {
        let bytes = halfBits(1) + le(UInt32(0x0000_FFFF)) + (0..<16).map { UInt8($0 | ($0 << 4)) }
        return (bytes, (0..<16).map { Float($0) } + (0..<16).map { Float($0 - 16) })
    }

    /// Q5_1: d = 0.5, m = 1, qh = 0xFFFF0000 (fifth bit for weights 16...31)
    ///   →  w[i] = 0.5·i + 1,  w[i+16] = 0.5·(i + 16) + 1.
    static func q5_1() -> ([UInt8], [Float]) {
        let bytes = halfBits(0.5) + halfBits(1) + le(UInt32(0xFFFF_0000)) + (0..<16).map { UInt8($0 | ($0 << 4)) }
        return (bytes, (0..<16).map { 0.5 * Float($0) + 1 } + (0..<16).map { 0.5 * Float($0 + 16) + 1 })
    }

    static let kScales: [UInt8] = [1, 2, 3, 4, 17, 33, 50, 63]
    static let kMins: [UInt8] = [0, 1, 2, 3, 20, 40, 5, 63]

    /// The 12 bytes of Q4_K/Q5_K six-bit scales and mins, packed by hand per the spec.
    static func packedScales() -> [UInt8] {
        var s = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            s[j] = kScales[j] | ((kScales[j + 4] >> 4) << 6)
            s[j + 4] = kMins[j] | ((kMins[j + 4] >> 4) << 6)
            s[j + 8] = (kScales[j + 4] & 0xF) | ((kMins[j + 4] & 0xF) << 4)
        }
        return s
    }

    /// Q4_K: d = 1, dmin = 0.5; chunk c, byte l = (l % 16) | ((l + c) % 16) << 4
    ///   →  group 2c weight l = sc[2c]·(l % 16) − 0.5·m[2c],  group 2c+1 weight l = sc[2c+1]·((l + c) % 16) − 0.5·m[2c+1].
    static func q4_K() -> ([UInt8], [Float]) {
        var qs: [UInt8] = []
        var expected = [Float](repeating: 0, count: 256)
        for c in 0..<4 {
            for l in 0..<32 {
                qs.append(UInt8((l % 16) | (((l + c) % 16) << 4)))
                expected[64 * c + l] = Float(kScales[2 * c]) * Float(l % 16) - 0.5 * Float(kMins[2 * c])
                expected[64 * c + 32 + l] = Float(kScales[2 * c + 1]) * Float((l + c) % 16) - 0.5 * Float(kMins[2 * c + 1])
            }
        }
        return (halfBits(1) + halfBits(0.5) + packedScales() + qs, expected)
    }

    /// Q5_K: Q4_K's block plus qh[l] = l·37 mod 256; group 2c takes bit 2c of qh[l], group 2c+1 bit 2c+1, worth 16.
    static func q5_K() -> ([UInt8], [Float]) {
        let qh = (0..<32).map { UInt8(($0 * 37) & 0xFF) }
        var qs: [UInt8] = []
        var expected = [Float](repeating: 0, count: 256)
        for c in 0..<4 {
            for l in 0..<32 {
                qs.append(UInt8((l % 16) | (((l + c) % 16) << 4)))
                let lo = (l % 16) + 16 * Int((qh[l] >> (2 * c)) & 1)
                let hi = ((l + c) % 16) + 16 * Int((qh[l] >> (2 * c + 1)) & 1)
                expected[64 * c + l] = Float(kScales[2 * c]) * Float(lo) - 0.5 * Float(kMins[2 * c])
                expected[64 * c + 32 + l] = Float(kScales[2 * c + 1]) * Float(hi) - 0.5 * Float(kMins[2 * c + 1])
            }
        }
        return (halfBits(1) + halfBits(0.5) + packedScales() + qh + qs, expected)
    }

    /// Q6_K: d = 0.25, sub-block scales sc[s] = s − 8, q[i] = (7i mod 64) − 32  →  w[i] = 0.25·sc[i / 16]·q[i].
    /// Packed per the spec: for each half h and l < 32 the four weights 128h + l + 32n (n = 0...3).
    static func q6_K(
        scales: [Int8] = (0..<16).map { Int8($0 - 8) }, q: [Int] = (0..<256).map { ($0 * 7) % 64 - 32 },
        d: Float = 0.25
    ) -> ([UInt8], [Float]) {
        var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
        for h in 0..<2 {
            for l in 0..<32 {
                let u = (0..<4).map { UInt8(q[128 * h + l + 32 * $0] + 32) }
                ql[64 * h + l] = (u[0] & 0xF) | ((u[2] & 0xF) << 4)
                ql[64 * h + l + 32] = (u[1] & 0xF) | ((u[3] & 0xF) << 4)
                qh[32 * h + l] = (u[0] >> 4) | ((u[1] >> 4) << 2) | ((u[2] >> 4) << 4) | ((u[3] >> 4) << 6)
            }
        }
        let bytes = ql + qh + scales.map { UInt8(bitPattern: $0) } + halfBits(d)
        let expected = (0..<256).map { d * Float(scales[$0 / 16]) * Float(q[$0]) }
        return (bytes, expected)
    }

    /// F16 / BF16 bit patterns with their values (incl. Float16's largest and smallest subnormal).
    static let f16: [(UInt16, Float)] = [(0x3E00, 1.5), (0xC000, -2), (0x7BFF, 65504), (0x0001, 5.9604645e-8), (0x0000, 0)]
    static let bf16: [(UInt16, Float)] = [(0x3FC0, 1.5), (0xC000, -2), (0x4780, 65536), (0x0000, 0)]

    static func all() -> [(GGMLType, [UInt8], [Float])] {
        let blocks: [(GGMLType, ([UInt8], [Float]))] = [
            (.Q8_0, q8_0()), (.Q4_0, q4_0()), (.Q4_1, q4_1()), (.Q5_0, q5_0()), (.Q5_1, q5_1()),
            (.Q4_K, q4_K()), (.Q5_K, q5_K()), (.Q6_K, q6_K()),
        ]
        return blocks.map { ($0.0, $0.1.0, $0.1.1) }
    }
}
