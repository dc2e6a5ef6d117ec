// Weight storage formats and their traits table (one place for per-format sizes, as in ggml's
// type traits). Byte layouts are FIXED by the weight file (this comment is their contract); every row is
// contiguous, row r starts at r * bytesPerRow(cols), no padding between rows.
//
//   f32  : cols × Float32
//   f16  : cols × UInt16 (IEEE half)
//   int8 : per group of 32 weights a 34-byte block [scale: Float16][q: 32 × Int8], w = scale·q
//          (bit-identical to ggml's Q8_0 block, so Q8_0 imports as is).
//   int5 : superblocks of 256 weights = 8 groups of 32, 176 bytes each (5.5 bits per weight, as
//          ggml's Q5_0, which imports exactly: int8 would need 8.5):
//          [d: 8 × Float16][qh: 32 bytes][nibbles: 128 bytes], w = d[j]·(q − 16), q in 0...31.
//          Nibbles as int4's pairs: 32-byte chunk p holds groups A = 2p, B = 2p + 1, byte i < 16
//          = A's weight i (low nibble) | A's weight i + 16 (high), byte 16 + i the same for B. So a
//          chunk unpacks into code vector 2p (low nibbles: [A w0..15 | B w0..15]) and 2p + 1 (high
//          nibbles: [A w16..31 | B w16..31]). The fifth bit of the weight at byte b of code vector
//          v is bit v of qh[b]: one 32-byte load serves the superblock, and vector v's bits are a
//          constant shift and a mask away (Q5_0's per-block 32-bit word needs a byte spread and a
//          compare per group). A truncated last superblock of g groups keeps the 48-byte header
//          (d past g zero) and has 16·g nibble bytes; an unpaired last group is 16 bytes.
//   int4 : superblocks of 256 weights = 8 groups of 32, 144 bytes each:
//          [d: Float16][dmin: Float16][scales: 12 bytes][nibbles: 128 bytes]
//          w = d·sc[j]·q − dmin·m[j], q in 0...15, with sc/m six-bit values packed exactly as
//          ggml's Q4_K (get_scale_min_k4). Group j's 32 weights are nibble bytes 16j..<16j+16:
//          byte i holds weight i (low nibble) and weight i+16 (high nibble). A row whose
//          cols % 256 != 0 ends with a truncated superblock: the 16-byte header followed by only
//          16·g nibble bytes for its g = (cols % 256)/32 groups.
//   int6 : superblocks of 256 weights = 16 sub-blocks of 16, 210 bytes each (6.5625 bits per weight,
//          ggml's Q6_K, which imports exactly: int8 would need 8.5); cols must be a multiple of 256:
//          [d: Float16][sc: 16 × Int8][nibbles: 128 bytes][high bits: 64 bytes]
//          w = d·sc[s]·(q − 32), q in 0...63, sub-block s = weights 16s ..< 16s+16.
//          Low four bits as int4's pairs (32-byte chunk p holds groups 2p and 2p + 1 of 32 and unpacks
//          into code vector 2p = [A w0..15 | B w0..15] and 2p + 1 = [A w16..31 | B w16..31], each
//          16-byte half one sub-block). The two high bits of the weight at byte b of code vector v
//          are bits 2(v % 4) ..< 2(v % 4) + 2 of byte b of high-bit plane v / 4 (32 bytes each): two
//          32-byte loads serve a superblock, and each vector's bits are a constant shift and a mask
//          away. The scales are stored in the order the code vectors' halves read them: sc byte
//          t < 8 is the scale of vector t's low half (sub-block 4(t/2) + t%2), t ≥ 8 of vector
//          t − 8's high half (sub-block 4((t−8)/2) + 2 + t%2), so after a sign extension to Int16 one
//          `vpshufb` spreads vector v's two scales over its two 128-bit lanes.
//
// Why int4 uses the offset form (d·sc·q − dmin·m) rather than a symmetric one: the default
// model's int4 source (Q4_K) imports exactly, the offset gives one more effective level per group
// for skewed groups, and raw unsigned nibbles times signed int8 activations are exactly what
// `vpmaddubsw` (AVX2) multiplies (and VNNI's `vpdpbusd`); the offset's contribution is
// −dmin·m[j]·Σx over the group, with Σx computed once per call per activation group.
// int5 uses the same unsigned-codes trick: q in 0...31 times int8 activations, minus 16·d·Σx;
// int6 too (q in 0...63, minus 32·Σ_s sc[s]·Σx over sub-block s, with the activations' sub-block
// sums computed once per call), except in the GEMM, which unpacks q − 32 as signed bytes.

/// How a matrix's weights are stored. The raw value is what the weight file records.
public enum WeightFormat: String, Codable, Sendable, CaseIterable {
    case f32, f16, int8, int5, int4, int6

    /// Per-format constants: the traits table.
    public struct Traits: Sendable {
        /// Weights per scale group (1 for float formats).
        public let groupSize: Int
        /// Weights per storage block (a Q8_0 block for int8, a 256-weight superblock for int5 and int4).
        public let blockWeights: Int
        /// Bytes of one full block.
        public let blockBytes: Int
        /// Whether `cols` must be a multiple of 32 (of 256 for int6, see `supports(cols:)`).
        public let isQuantized: Bool
    }

    public var traits: Traits {
        switch self {
        case .f32: return Traits(groupSize: 1, blockWeights: 1, blockBytes: 4, isQuantized: false)
        case .f16: return Traits(groupSize: 1, blockWeights: 1, blockBytes: 2, isQuantized: false)
        case .int8: return Traits(groupSize: 32, blockWeights: 32, blockBytes: Int8Block.bytes, isQuantized: true)
        case .int5: return Traits(groupSize: 32, blockWeights: 256, blockBytes: Int5Superblock.bytes, isQuantized: true)
        case .int4: return Traits(groupSize: 32, blockWeights: 256, blockBytes: Int4Superblock.bytes, isQuantized: true)
        case .int6: return Traits(groupSize: 32, blockWeights: 256, blockBytes: Int6Superblock.bytes, isQuantized: true)
        }
    }

    /// Bytes of one row of `cols` weights (`cols` must be a multiple of 32 for quantized formats, of
    /// 256 for int6).
    public func bytesPerRow(cols: Int) -> Int {
        switch self {
        case .f32: return cols * 4
        case .f16: return cols * 2
        case .int8: return cols / 32 * Int8Block.bytes
        case .int5:
            let tail = cols % 256
            return cols / 256 * Int5Superblock.bytes + (tail == 0 ? 0 : Int5Superblock.headerBytes + tail / 2)
        case .int4:
            let tail = cols % 256
            return cols / 256 * Int4Superblock.bytes + (tail == 0 ? 0 : Int4Superblock.headerBytes + tail / 2)
        case .int6:
            return cols / 256 * Int6Superblock.bytes
        }
    }

    /// Whether a row of `cols` weights can be stored in this format.
    /// int6 has whole superblocks only: its source, Q6_K, cannot store other rows either.
    public func supports(cols: Int) -> Bool {
        cols > 0 && (!traits.isQuantized || cols % 32 == 0) && (self != .int6 || cols % 256 == 0)
    }

    /// What `supports(cols:)` asks for, in words (for error messages).
    public var columnRequirement: String {
        self == .int6 ? "a positive multiple of 256" : traits.isQuantized ? "a positive multiple of 32" : "positive"
    }

    /// Average storage bits per weight for rows of `cols` weights.
    public func bitsPerWeight(cols: Int) -> Double {
        Double(bytesPerRow(cols: cols) * 8) / Double(cols)
    }
}

/// int8 block layout: [scale: Float16 LE][q: 32 × Int8] (ggml Q8_0).
public enum Int8Block {
    public static let bytes = 34
    public static let scaleOffset = 0
    public static let quantsOffset = 2
}

/// int5 superblock layout (see the file comment): [d: 8 × Float16][qh: 32][nibbles: 16 per group].
public enum Int5Superblock {
    public static let bytes = 176
    public static let headerBytes = 48
    public static let highBitsOffset = 16
    public static let nibblesOffset = 48

    /// Where weight i (0..<32) of group j (0..<8) lives: (nibble byte offset from the superblock,
    /// whether it is the high nibble, qh byte offset, qh bit).
    @inline(__always)
    static func position(_ j: Int, _ i: Int) -> (byte: Int, high: Bool, qhByte: Int, qhBit: Int) {
        let side = j & 1, h = i >> 4
        let b = side * 16 + (i & 15)
        return (nibblesOffset + 32 * (j >> 1) + b, h == 1, highBitsOffset + b, 2 * (j >> 1) + h)
    }

    /// Code q (0...31) of weight `i` of group `j` of the superblock at `sb`.
    @inline(__always)
    public static func code(_ sb: UnsafeRawPointer, _ j: Int, _ i: Int) -> UInt8 {
        let (byte, high, qhByte, qhBit) = position(j, i)
        let b = sb.load(fromByteOffset: byte, as: UInt8.self)
        let nibble = high ? b >> 4 : b & 0xF
        return nibble | ((sb.load(fromByteOffset: qhByte, as: UInt8.self) >> UInt8(qhBit)) & 1) << 4
    }

    /// Scale d of group `j` as Float16 bits.
    @inline(__always)
    public static func scaleBits(_ sb: UnsafeRawPointer, _ j: Int) -> UInt16 {
        UInt16(littleEndian: sb.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self))
    }

    /// Writes a row of `cols` weights: `codes[k]` (0...31) for weight k, `scales[g]` the Float16
    /// bits of group g's d. `dst` must hold `WeightFormat.int5.bytesPerRow(cols:)` bytes.
    public static func packRow(codes: UnsafePointer<UInt8>, scales: UnsafePointer<UInt16>, cols: Int, into dst: UnsafeMutableRawPointer) {
        let groups = cols / 32
        dst.initializeMemory(as: UInt8.self, repeating: 0, count: WeightFormat.int5.bytesPerRow(cols: cols))
        for g in 0..<groups {
            let sb = dst + (g / 8) * bytes, j = g % 8
            sb.storeBytes(of: scales[g].littleEndian, toByteOffset: 2 * j, as: UInt16.self)
            for i in 0..<32 {
                let q = codes[g * 32 + i]
                let (byte, high, qhByte, qhBit) = position(j, i)
                let b = sb.load(fromByteOffset: byte, as: UInt8.self)
                sb.storeBytes(of: b | (high ? (q & 0xF) << 4 : q & 0xF), toByteOffset: byte, as: UInt8.self)
                let h = sb.load(fromByteOffset: qhByte, as: UInt8.self)
                sb.storeBytes(of: h | ((q >> 4) & 1) << UInt8(qhBit), toByteOffset: qhByte, as: UInt8.self)
            }
        }
    }
}

/// int4 superblock layout: [d: Float16][dmin: Float16][scales: 12][nibbles: 16 per group].
public enum Int4Superblock {
    public static let bytes = 144
    public static let headerBytes = 16
    public static let dOffset = 0
    public static let dminOffset = 2
    public static let scalesOffset = 4
    public static let nibblesOffset = 16

    /// Six-bit scale and min of group `j` (0..<8) from the 12 packed bytes, exactly as ggml's
    /// `get_scale_min_k4`.
    @inline(__always)
    public static func scaleMin(_ s: UnsafePointer<UInt8>, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 {
            return (s[j] & 63, s[j + 4] & 63)
        }
        return ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }

    /// Packs eight six-bit scales and mins (each 0...63) into 12 bytes, the inverse of `scaleMin`.
    public static func packScaleMin(scales: [UInt8], mins: [UInt8], into s: UnsafeMutablePointer<UInt8>) {
        precondition(scales.count == 8 && mins.count == 8)
        for j in 0..<12 { s[j] = 0 }
        for j in 0..<8 {
            let sc = scales[j] & 63, m = mins[j] & 63
            if j < 4 {
                s[j] |= sc
                s[j + 4] |= m
            } else {
                s[j + 4] = (sc & 0xF) | ((m & 0xF) << 4)
                s[j - 4] |= (sc >> 4) << 6
                s[j] |= (m >> 4) << 6
            }
        }
    }
}

/// int6 superblock layout (see the file comment): [d: Float16][sc: 16 × Int8][nibbles: 128][high bits: 64].
public enum Int6Superblock {
    public static let bytes = 210
    public static let scalesOffset = 2
    public static let nibblesOffset = 18
    public static let highBitsOffset = 146

    /// Where weight i (0..<256) of a superblock lives: (nibble byte offset, whether it is the high
    /// nibble, high-bit byte offset, shift of its two high bits).
    @inline(__always)
    static func position(_ i: Int) -> (byte: Int, high: Bool, highByte: Int, shift: Int) {
        let j = i >> 5, e = i & 31
        let v = 2 * (j >> 1) + (e >> 4), b = (j & 1) * 16 + (e & 15)
        return (nibblesOffset + 32 * (j >> 1) + b, e >= 16, highBitsOffset + 32 * (v >> 2) + b, 2 * (v & 3))
    }

    /// Position in the stored scale order of sub-block s (0..<16): see the file comment.
    @inline(__always)
    public static func scaleSlot(_ s: Int) -> Int {
        let p = s >> 2, r = s & 3
        return (r >= 2 ? 8 : 0) + 2 * p + (r & 1)
    }

    /// Code q (0...63) of weight `i` (0..<256) of the superblock at `sb`.
    @inline(__always)
    public static func code(_ sb: UnsafeRawPointer, _ i: Int) -> UInt8 {
        let (byte, high, highByte, shift) = position(i)
        let b = sb.load(fromByteOffset: byte, as: UInt8.self)
        let nibble = high ? b >> 4 : b & 0xF
        return nibble | ((sb.load(fromByteOffset: highByte, as: UInt8.self) >> UInt8(shift)) & 3) << 4
    }

    /// Scale of sub-block `s` (0..<16).
    @inline(__always)
    public static func scale(_ sb: UnsafeRawPointer, _ s: Int) -> Int8 {
        sb.load(fromByteOffset: scalesOffset + scaleSlot(s), as: Int8.self)
    }

    /// d as Float16 bits.
    @inline(__always)
    public static func dBits(_ sb: UnsafeRawPointer) -> UInt16 {
        UInt16(littleEndian: sb.loadUnaligned(as: UInt16.self))
    }

    /// Writes a row of `cols` (a multiple of 256) weights: `codes[k]` (0...63) for weight k,
    /// `scales[s]` for sub-block s of the row (16 weights each), `d[b]` the Float16 bits of
    /// superblock b's d. `dst` must hold `WeightFormat.int6.bytesPerRow(cols:)` bytes.
    public static func packRow(
        codes: UnsafePointer<UInt8>, scales: UnsafePointer<Int8>, d: UnsafePointer<UInt16>, cols: Int,
        into dst: UnsafeMutableRawPointer
    ) {
        precondition(cols % 256 == 0, "int6 rows hold whole superblocks of 256 weights, got \(cols) columns")
        dst.initializeMemory(as: UInt8.self, repeating: 0, count: WeightFormat.int6.bytesPerRow(cols: cols))
        for b in 0..<cols / 256 {
            let sb = dst + b * bytes
            sb.storeBytes(of: d[b].littleEndian, as: UInt16.self)
            for s in 0..<16 { sb.storeBytes(of: scales[16 * b + s], toByteOffset: scalesOffset + scaleSlot(s), as: Int8.self) }
            for i in 0..<256 {
                let q = codes[256 * b + i]
                let (byte, high, highByte, shift) = position(i)
                let old = sb.load(fromByteOffset: byte, as: UInt8.self)
                sb.storeBytes(of: old | (high ? (q & 0xF) << 4 : q & 0xF), toByteOffset: byte, as: UInt8.self)
                let h = sb.load(fromByteOffset: highByte, as: UInt8.self)
                sb.storeBytes(of: h | ((q >> 4) & 3) << UInt8(shift), toByteOffset: highByte, as: UInt8.self)
            }
        }
    }
}
