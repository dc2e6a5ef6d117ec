import Foundation
import Tensor

// Repacks from GGUF block layouts into Sarvam's run-time formats (byte layouts in Tensor's
// WeightFormat.swift). Each function converts whole rows: `src` points at row 0 of `rows` rows of `cols`
// weights in the source type, `dst` at the same rows in the target format. Exact repacks reproduce
// the GGUF dequantization bit for bit (tested in RepackTests):
//   Q8_0 → int8   identical bytes (int8 IS Q8_0's block)
//   Q4_0 → int8   scale d, q − 8           Q5_0 → int8   scale d, q − 16
//   Q5_0 → int5   scale d and the five-bit q verbatim, regrouped into int5 superblocks
//   Q4_K → int4   header (d, dmin, 12 scale bytes) verbatim, nibbles reordered group by group
//   Q6_K → int6   d, the 16 sub-block scales and the six-bit q verbatim, reordered for the kernels
//   Q6_K → int8   exact where the two 16-weight sub-block scales of a 32-group share a factor that
//                 keeps every product in int8 and d × factor in Float16; else that group is requantized.

public enum Repack {
    /// Q4_0 (18-byte blocks) → int8 (34-byte blocks), exact.
    public static func q4_0ToInt8(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, blocks: Int) {
        for b in 0..<blocks {
            let s = src + 18 * b, o = dst + 34 * b
            o.copyMemory(from: s, byteCount: 2)
            for i in 0..<16 {
                let q = byte(s, 2 + i)
                o.storeBytes(of: Int8(Int(q & 0xF) - 8), toByteOffset: 2 + i, as: Int8.self)
                o.storeBytes(of: Int8(Int(q >> 4) - 8), toByteOffset: 18 + i, as: Int8.self)
            }
        }
    }

    /// Q5_0 (22-byte blocks) → int8 (34-byte blocks), exact.
    public static func q5_0ToInt8(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, blocks: Int) {
        for b in 0..<blocks {
            let s = src + 22 * b, o = dst + 34 * b
            o.copyMemory(from: s, byteCount: 2)
            let qh = UInt32(littleEndian: s.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            for i in 0..<16 {
                let (q0, q1) = q5Values(qh, s + 6, i)
                o.storeBytes(of: Int8(Int(q0) - 16), toByteOffset: 2 + i, as: Int8.self)
                o.storeBytes(of: Int8(Int(q1) - 16), toByteOffset: 18 + i, as: Int8.self)
            }
        }
    }

    /// Q5_0 (22-byte blocks) → int5 (176-byte superblocks, see Tensor's WeightFormat), exact: the
    /// same d and 0...31 codes, laid out for the kernels.
    public static func q5_0ToInt5(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, rows: Int, cols: Int) {
        let groups = cols / 32, rowBytes = WeightFormat.int5.bytesPerRow(cols: cols)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cols) { codes in
            withUnsafeTemporaryAllocation(of: UInt16.self, capacity: groups) { scales in
                for r in 0..<rows {
                    for g in 0..<groups {
                        let s = src + 22 * (r * groups + g)
                        scales[g] = UInt16(littleEndian: s.loadUnaligned(as: UInt16.self))
                        let qh = UInt32(littleEndian: s.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
                        for i in 0..<16 {
                            let (q0, q1) = q5Values(qh, s + 6, i)
                            codes[g * 32 + i] = q0
                            codes[g * 32 + 16 + i] = q1
                        }
                    }
                    Int5Superblock.packRow(codes: codes.baseAddress!, scales: scales.baseAddress!, cols: cols, into: dst + r * rowBytes)
                }
            }
        }
    }

    /// Q4_K (144-byte superblocks) → int4 (144-byte superblocks), exact. Q4_K's 32-byte chunk c holds
    /// group 2c in its low nibbles and group 2c+1 in its high nibbles (weight l of each at byte l);
    /// int4 puts group j at bytes 16j..<16j+16, weight i low and weight i+16 high.
    public static func q4_KToInt4(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, superblocks: Int) {
        for b in 0..<superblocks {
            let s = src + 144 * b, o = dst + 144 * b
            o.copyMemory(from: s, byteCount: 16)
            let qs = s + 16, out = o + 16
            for c in 0..<4 {
                for i in 0..<16 {
                    let a = byte(qs, 32 * c + i), z = byte(qs, 32 * c + i + 16)
                    out.storeBytes(of: (a & 0xF) | (z << 4), toByteOffset: 16 * (2 * c) + i, as: UInt8.self)
                    out.storeBytes(of: (a >> 4) | (z & 0xF0), toByteOffset: 16 * (2 * c + 1) + i, as: UInt8.self)
                }
            }
        }
    }

    /// Q6_K (210-byte superblocks) → int6 (210-byte superblocks, see Tensor's WeightFormat), exact: the
    /// same d, sub-block scales and 0...63 codes (q − 32 is Q6_K's value), laid out for the kernels.
    public static func q6_KToInt6(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, superblocks: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { codes in
            withUnsafeTemporaryAllocation(of: Int8.self, capacity: 16) { scales in
                withUnsafeTemporaryAllocation(of: UInt16.self, capacity: 1) { d in
                    for b in 0..<superblocks {
                        let s = src + 210 * b
                        for i in 0..<256 { codes[i] = UInt8(Int(q6Value(s, i).q) + 32) }
                        for j in 0..<16 { scales[j] = s.load(fromByteOffset: 192 + j, as: Int8.self) }
                        d[0] = UInt16(littleEndian: s.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
                        Int6Superblock.packRow(
                            codes: codes.baseAddress!, scales: scales.baseAddress!, d: d.baseAddress!, cols: 256,
                            into: dst + Int6Superblock.bytes * b)
                    }
                }
            }
        }
    }

    /// Q6_K (210-byte superblocks) → int8: 8 groups of 32 per superblock. Returns the number of groups
    /// that had to be requantized (0 = the whole range was exact).
    public static func q6_KToInt8(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, superblocks: Int) -> Int {
        var requantized = 0
        var values = (0..<32).map { _ in Int8(0) }
        var floats = [Float](repeating: 0, count: 256)
        for b in 0..<superblocks {
            let s = src + 210 * b
            let d = half(s, 208)
            var dequantizedBlock = false
            for g in 0..<8 {
                let o = dst + 34 * (8 * b + g)
                let scaleA = Int(s.load(fromByteOffset: 192 + 2 * g, as: Int8.self))
                let scaleB = Int(s.load(fromByteOffset: 192 + 2 * g + 1, as: Int8.self))
                var maxA = 0, maxB = 0
                for i in 0..<32 {
                    let (q, _) = q6Value(s, 32 * g + i)
                    values[i] = q
                    if i < 16 { maxA = max(maxA, abs(Int(q))) } else { maxB = max(maxB, abs(Int(q))) }
                }
                // Common factor f = gcd(|a|, |b|): weights are (d·f)·(a/f·q) and (d·f)·(b/f·q). Exact when
                // d·f is a Float16 and both multiples stay within ±127 (both sides round the same real once).
                let f = gcd(abs(scaleA), abs(scaleB))
                if f == 0 {
                    o.storeBytes(of: UInt16(0), as: UInt16.self)
                    for i in 0..<32 { o.storeBytes(of: Int8(0), toByteOffset: 2 + i, as: Int8.self) }
                    continue
                }
                let ka = scaleA / f, kb = scaleB / f
                let scale = d * Float(f)
                let scaleHalf = Float16(scale)
                if Float(scaleHalf) == scale, abs(ka) * maxA <= 127, abs(kb) * maxB <= 127 {
                    o.storeBytes(of: scaleHalf.bitPattern.littleEndian, as: UInt16.self)
                    for i in 0..<32 {
                        let k = i < 16 ? ka : kb
                        o.storeBytes(of: Int8(k * Int(values[i])), toByteOffset: 2 + i, as: Int8.self)
                    }
                } else {
                    if !dequantizedBlock {
                        floats.withUnsafeMutableBufferPointer { dequantizeQ6_K(s, $0.baseAddress!, 1) }
                        dequantizedBlock = true
                    }
                    floats.withUnsafeBufferPointer { quantizeGroupInt8($0.baseAddress! + 32 * g, o) }
                    requantized += 1
                }
            }
        }
        return requantized
    }

    /// int8 quantization of one group of 32, as Tensor's `QuantizedMatrix.quantize`: scale = max|x| / 127
    /// rounded to Float16 first, q = round(x / scale) clamped to ±127.
    static func quantizeGroupInt8(_ x: UnsafePointer<Float>, _ o: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for i in 0..<32 { amax = max(amax, abs(x[i])) }
        let d = Float(Float16(amax / 127))
        let inverse: Float = d > 0 ? 1 / d : 0
        o.storeBytes(of: Float16(d).bitPattern.littleEndian, as: UInt16.self)
        for i in 0..<32 {
            let q = max(-127, min(127, (x[i] * inverse).rounded()))
            o.storeBytes(of: Int8(q), toByteOffset: 2 + i, as: Int8.self)
        }
    }

    static func gcd(_ a: Int, _ b: Int) -> Int {
        var (x, y) = (a, b)
        while y != 0 { (x, y) = (y, x % y) }
        return x
    }
}
