// The int4 encoder: how a row of Float32 weights becomes Q4_K-structured superblocks (byte layout in
// WeightFormat.swift). Shape letters: K = cols; a row holds ⌈K/256⌉ superblocks, superblock s holds
// G = min(8, K/32 − 8s) groups of 32 weights (the last one truncated when K % 256 != 0).
// Group j of a superblock decodes as  w ≈ d·sc[j]·q − dmin·m[j],  q 0...15,  sc, m 0...63,
// d, dmin Float16.
//
// COVERING: each group's grid spans its range [min(lo, 0), hi], so every weight is within half a
// step d·sc[j]; rounding d, dmin, sc and m up to guarantee that wastes some levels. A least-squares
// encoder with less weight error gave a worse perplexity and was dropped (docs/decisions.md).
// QuantizationPolicy decides which matrices are int4.

/// One int4 row of `cols` weights (a multiple of 32) into `dst` (`WeightFormat.int4.bytesPerRow(cols:)`
/// bytes), superblock by superblock.
func quantizeInt4Row(_ w: UnsafePointer<Float>, cols: Int, into dst: UnsafeMutableRawPointer) {
    let groups = cols / 32
    withUnsafeTemporaryAllocation(byteCount: Int4Superblock.bytes, alignment: 16) { scratch in
        var superblock = 0
        while superblock * 8 < groups {
            let count = min(8, groups - superblock * 8)
            encodeInt4SuperblockCovering(w + superblock * 256, groups: count, into: scratch.baseAddress!)
            (dst + superblock * Int4Superblock.bytes).copyMemory(
                from: scratch.baseAddress!,
                byteCount: Int4Superblock.headerBytes + 16 * count)
            superblock += 1
        }
    }
}

/// For each group j with range [lo, hi] (lo ≤ 0 ≤ hi widened to hold 0, as in Q4_K), the grid
/// −dmin·m[j] + d·sc[j]·q, q = 0...15, COVERS the range: m[j] = ceil(−lo/dmin),
/// sc[j] = ceil((hi + dmin·m[j]) / (15·d)), with d, dmin the superblock's Float16 scales (largest
/// group need / 63, rounded up so the six-bit values never exceed 63). Covering the range is what
/// bounds the round-trip error by half a step d·sc[j] in every group.
/// Writes a whole 144-byte superblock of which groups ≥ `groups` stay zero.
func encodeInt4SuperblockCovering(_ w: UnsafePointer<Float>, groups count: Int, into sb: UnsafeMutableRawPointer) {
    sb.initializeMemory(as: UInt8.self, repeating: 0, count: Int4Superblock.bytes)
    var lows = [Float](repeating: 0, count: 8), highs = [Float](repeating: 0, count: 8)
    for j in 0..<count {
        let x = w + j * 32
        var lo: Float = 0, hi: Float = 0
        for i in 0..<32 { lo = min(lo, x[i]); hi = max(hi, x[i]) }
        lows[j] = lo
        highs[j] = hi
    }
    // dmin: smallest Float16 ≥ max(−lo)/63, so every m[j] = ceil(−lo/dmin) ≤ 63.
    let dmin = roundUpHalf(-(lows.min() ?? 0) / 63)
    var mins = [UInt8](repeating: 0, count: 8), scales = [UInt8](repeating: 0, count: 8)
    var needs = [Float](repeating: 0, count: 8)
    for j in 0..<count {
        let m = dmin > 0 ? min(63, (-lows[j] / dmin).rounded(.up)) : 0
        mins[j] = UInt8(m)
        needs[j] = highs[j] + dmin * m  // span the 15 steps must reach
    }
    let d = roundUpHalf((needs.max() ?? 0) / (15 * 63))
    for j in 0..<count {
        scales[j] = d > 0 ? UInt8(min(63, (needs[j] / (15 * d)).rounded(.up))) : 0
    }
    storeHalf(d, sb + Int4Superblock.dOffset)
    storeHalf(dmin, sb + Int4Superblock.dminOffset)
    Int4Superblock.packScaleMin(
        scales: scales, mins: mins,
        into: (sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self))
    for j in 0..<count {
        writeNearestCodes(
            w + j * 32, step: d * Float(scales[j]), offset: dmin * Float(mins[j]),
            into: (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self))
    }
}

/// The smallest Float16-representable value ≥ x (x ≥ 0, finite, below Float16's max).
func roundUpHalf(_ x: Float) -> Float {
    var h = Float16(x)
    if Float(h) < x { h = h.nextUp }
    return Float(h)
}

/// Group nibbles: each weight's nearest level of the grid step·q − offset, q 0...15.
@inline(__always)
func writeNearestCodes(_ x: UnsafePointer<Float>, step: Float, offset: Float, into nib: UnsafeMutablePointer<UInt8>) {
    let inv: Float = step > 0 ? 1 / step : 0
    for i in 0..<16 {
        let lo = UInt8(max(0, min(15, ((x[i] + offset) * inv).rounded(.toNearestOrEven))))
        let hi = UInt8(max(0, min(15, ((x[i + 16] + offset) * inv).rounded(.toNearestOrEven))))
        nib[i] = lo | (hi << 4)
    }
}
