// int4 encoders: how a row of Float32 weights becomes Q4_K-structured superblocks (byte layout in
// WeightFormat.swift). Shape letters: K = cols; a row holds ⌈K/256⌉ superblocks, superblock s holds
// G = min(8, K/32 − 8s) groups of 32 weights (the last one truncated when K % 256 != 0).
// Group j of a superblock decodes as  w ≈ d·sc[j]·q − dmin·m[j],  q 0...15,  sc, m 0...63,
// d, dmin Float16.
//
// Two encoders of one superblock:
//   covering    each group's grid spans its range [min(lo, 0), hi], so every weight is within half
//               a step d·sc[j]; rounding d, dmin, sc and m up to guarantee that wastes levels.
//   minimizing  importance-weighted least squares, in the spirit of llama.cpp's Q4_K quantizer
//               (make_qkx2_quants): per group, a search over grids of slightly different steps,
//               each refit by least squares on its own codes (with `keepRange`, the default, only
//               grids that keep every weight within half a step: no clipping); then the superblock's d, dmin from the largest
//               group scale and offset, each group's six-bit sc, m chosen among the neighbours of
//               its fit by the error they give, d and dmin refit by least squares, and finally
//               every q re-rounded to the nearest level of the grid actually stored.
// `quantizeInt4Row` defaults to COVERING: on the default model (the earlier `--quant int4` mix, 120
// matrices requantized from the GGUF's Q5_0, perplexity of gpl-3.txt at ctx 512; the current mix
// keeps layer 0 in int8, see QuantizationPolicy, and was measured with covering only) covering measured 5.630-5.650
// while every minimizing variant, despite a 27% lower weighted squared error (13% lower RMSE),
// measured worse: 5.950 (importance rms + |x|), 5.998 (the same without clipping), 5.978 (plain
// squared error), 6.164 (x²), 5.751 (minimizing except attn_q/attn_k). Yet the minimizing model is
// the more faithful one: mean KL divergence from the int8 model's next-token distributions 0.055-0.059
// against covering's 0.086-0.094; covering's errors happen to lower this text's perplexity (only
// attn_q/attn_k in covering int4 measures 5.197, below llama.cpp's 5.310). Which to make default is
// open; `.best` (both, keep the smaller weighted error per superblock) and `.minimizing` stay
// available for that decision and are tested.
//
// Importance of weight i of a group (as llama.cpp's Q4_K without an importance matrix):
// rms(group) + |x_i|: large weights matter more, small ones are not ignored.

/// Which superblock encoder `quantizeInt4Row` uses (tests and experiments pick one).
enum Int4Encoder: Sendable {
    /// Range-covering only: every weight within half a step of its group (the default).
    case covering
    /// Weighted least squares only.
    case minimizing
    /// Both, keeping the smaller weighted squared error per superblock.
    case best
}

/// Knobs of the minimizing encoder.
struct Int4SearchParameters: Sendable {
    /// Grids tried per group: steps covering the range with 15 + rmin + rdelta·t levels, t 0...steps.
    var rmin: Float = -1
    var rdelta: Float = 0.1
    var steps: Int = 20
    /// Refits of d and dmin by least squares after the six-bit scales and mins are chosen.
    var superblockRefits: Int = 2
    /// Importance x_i² instead of rms(group) + |x_i|.
    var squaredImportance = false
    /// Importance 1 for every weight (plain squared error); overrides `squaredImportance`.
    var unitImportance = false
    /// Only grids on which every weight of the group is within half a step of a level (no clipping).
    var keepRange = true

    static let standard = Int4SearchParameters()
}

/// One int4 row of `cols` weights (a multiple of 32) into `dst` (`WeightFormat.int4.bytesPerRow(cols:)`
/// bytes), superblock by superblock with `encoder`.
func quantizeInt4Row(_ w: UnsafePointer<Float>, cols: Int, into dst: UnsafeMutableRawPointer,
                     encoder: Int4Encoder = .covering, parameters: Int4SearchParameters = .standard) {
    let groups = cols / 32
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { importance in
        withUnsafeTemporaryAllocation(byteCount: 2 * Int4Superblock.bytes, alignment: 16) { scratch in
            let covering = scratch.baseAddress!, minimizing = covering + Int4Superblock.bytes
            var superblock = 0
            while superblock * 8 < groups {
                let x = w + superblock * 256
                let count = min(8, groups - superblock * 8)
                let out = dst + superblock * Int4Superblock.bytes
                let outBytes = Int4Superblock.headerBytes + 16 * count
                switch encoder {
                case .covering:
                    encodeInt4SuperblockCovering(x, groups: count, into: covering)
                    out.copyMemory(from: covering, byteCount: outBytes)
                case .minimizing:
                    int4Importance(x, count: 32 * count, squared: parameters.squaredImportance, unit: parameters.unitImportance, into: importance.baseAddress!)
                    encodeInt4SuperblockMinimizing(x, importance.baseAddress!, groups: count, parameters: parameters, into: minimizing)
                    out.copyMemory(from: minimizing, byteCount: outBytes)
                case .best:
                    int4Importance(x, count: 32 * count, squared: parameters.squaredImportance, unit: parameters.unitImportance, into: importance.baseAddress!)
                    encodeInt4SuperblockCovering(x, groups: count, into: covering)
                    encodeInt4SuperblockMinimizing(x, importance.baseAddress!, groups: count, parameters: parameters, into: minimizing)
                    let coveringError = int4SuperblockError(x, importance.baseAddress!, groups: count, covering)
                    let minimizingError = int4SuperblockError(x, importance.baseAddress!, groups: count, minimizing)
                    // `<` is false for NaN: a failed search (e.g. Float16 overflow) keeps covering.
                    out.copyMemory(from: minimizingError < coveringError ? minimizing : covering, byteCount: outBytes)
                }
                superblock += 1
            }
        }
    }
}

/// Importance of each of `count` weights (a multiple of 32): per group rms + |x_i|, or x_i².
func int4Importance(_ x: UnsafePointer<Float>, count: Int, squared: Bool, unit: Bool = false, into wt: UnsafeMutablePointer<Float>) {
    if unit {
        wt.update(repeating: 1, count: count)
        return
    }
    for g in 0..<count / 32 {
        let xs = x + 32 * g, ws = wt + 32 * g
        if squared {
            for i in 0..<32 { ws[i] = xs[i] * xs[i] }
            continue
        }
        var sumSquares: Float = 0
        for i in 0..<32 { sumSquares += xs[i] * xs[i] }
        let rms = (sumSquares / 32).squareRoot()
        for i in 0..<32 { ws[i] = rms + abs(xs[i]) }
    }
}

/// Σ importance·(decoded − x)² over the superblock's `groups` groups, decoded from its bytes.
func int4SuperblockError(_ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>, groups: Int, _ sb: UnsafeRawPointer) -> Float {
    let d = loadHalf(sb + Int4Superblock.dOffset), dmin = loadHalf(sb + Int4Superblock.dminOffset)
    let packed = (sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self)
    var total: Float = 0
    for j in 0..<groups {
        let (sc, m) = Int4Superblock.scaleMin(packed, j)
        let step = d * Float(sc), offset = dmin * Float(m)
        let nib = (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self)
        let xs = x + 32 * j, ws = wt + 32 * j
        for i in 0..<16 {
            let lo = step * Float(nib[i] & 0xF) - offset - xs[i]
            let hi = step * Float(nib[i] >> 4) - offset - xs[i + 16]
            total += ws[i] * lo * lo + ws[i + 16] * hi * hi
        }
    }
    return total
}

// MARK: - Covering

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
        needs[j] = highs[j] + dmin * m            // span the 15 steps must reach
    }
    let d = roundUpHalf((needs.max() ?? 0) / (15 * 63))
    for j in 0..<count {
        scales[j] = d > 0 ? UInt8(min(63, (needs[j] / (15 * d)).rounded(.up))) : 0
    }
    storeHalf(d, sb + Int4Superblock.dOffset)
    storeHalf(dmin, sb + Int4Superblock.dminOffset)
    Int4Superblock.packScaleMin(scales: scales, mins: mins,
                                into: (sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self))
    for j in 0..<count {
        writeNearestCodes(w + j * 32, step: d * Float(scales[j]), offset: dmin * Float(mins[j]),
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

// MARK: - Minimizing

/// The nearest codes clamp(round(v), 0, 15) of eight lanes. `replace(with:where:)` compiles to
/// vcmpps/vblendvps; `clamped`/`pointwiseMin` would be out-of-line calls per vector.
@inline(__always)
func nearestCodes(_ v: SIMD8<Float>) -> SIMD8<Float> {
    var v = v
    v.replace(with: 0, where: v .< 0)
    v.replace(with: 15, where: v .> 15)
    return v.rounded(.toNearestOrEven)
}

/// Lanes 8k ..< 8k+8 of a group (k 0..<4: a group of 32 is four ymm registers).
@inline(__always)
func lanes(_ p: UnsafePointer<Float>, _ k: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + 8 * k).loadUnaligned(as: SIMD8<Float>.self)
}

/// Σ wt·(step·q − offset − x)² over a group of 32 with every q the nearest level (which is the best
/// q for that grid, weight by weight).
@inline(__always)
func int4GroupError(_ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>, step: Float, offset: Float) -> Float {
    let inv: Float = step > 0 ? 1 / step : 0
    var acc = SIMD8<Float>()
    for k in 0..<4 {
        let xs = lanes(x, k)
        let diff = step * nearestCodes((xs + offset) * inv) - offset - xs
        acc += lanes(wt, k) * diff * diff
    }
    return acc.sum()
}

/// The weighted least-squares grid of one group of 32: value = scale·q − offset with scale ≥ 0,
/// offset ≥ 0 (the grid reaches down to 0 or below, as Q4_K's unsigned min requires).
/// Candidate t: codes q = round((x − lo)·(15 + rmin + rdelta·t)/(hi − lo)) clamped to 0...15 (for
/// t with 15 + rmin + rdelta·t > 15 the extremes clip), then (scale, offset) solved by least
/// squares on those codes; the best by weighted error wins, the plain range grid included.
func fitInt4Group(_ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>, parameters p: Int4SearchParameters) -> (scale: Float, offset: Float) {
    var lo8 = lanes(x, 0), hi8 = lo8
    var w8 = SIMD8<Float>(), wx8 = SIMD8<Float>()
    for k in 0..<4 {
        let xs = lanes(x, k), ws = lanes(wt, k)
        lo8.replace(with: xs, where: xs .< lo8)
        hi8.replace(with: xs, where: xs .> hi8)
        w8 += ws
        wx8 += ws * xs
    }
    let xmin = lo8.min(), hi = hi8.max()
    let lo = min(xmin, 0)
    let sumW = w8.sum(), sumX = wx8.sum()
    if hi <= lo { return (0, -lo) }     // constant group: the offset alone

    // The range grid: 15 steps from lo to hi.
    var bestScale = (hi - lo) / 15, bestOffset = -lo
    var bestError = int4GroupError(x, wt, step: bestScale, offset: bestOffset)
    for t in 0...max(0, p.steps) {
        let iscale = (15 + p.rmin + p.rdelta * Float(t)) / (hi - lo)
        var l8 = SIMD8<Float>(), l28 = SIMD8<Float>(), xl8 = SIMD8<Float>()
        for k in 0..<4 {
            let xs = lanes(x, k)
            let l = nearestCodes((xs - lo) * iscale)
            let wl = lanes(wt, k) * l
            l8 += wl; l28 += wl * l; xl8 += wl * xs
        }
        let sumL = l8.sum(), sumL2 = l28.sum(), sumXL = xl8.sum()
        // Minimize Σ wt (scale·l + low − x)² over scale, low (low = −offset ≤ 0).
        let det = sumW * sumL2 - sumL * sumL
        guard det > 0 else { continue }
        var scale = (sumW * sumXL - sumX * sumL) / det
        var low = (sumL2 * sumX - sumL * sumXL) / det
        if low > 0 {
            // The grid must reach 0: fix low = 0, refit the scale alone.
            low = 0
            scale = sumXL / sumL2
        }
        guard scale > 0 else { continue }
        if p.keepRange && !int4GridCovers(lo: xmin, hi: hi, step: scale, offset: -low) { continue }
        var e8 = SIMD8<Float>()
        for k in 0..<4 {
            let xs = lanes(x, k)
            let diff = scale * nearestCodes((xs - lo) * iscale) + low - xs
            e8 += lanes(wt, k) * diff * diff
        }
        let error = e8.sum()
        if error < bestError {
            bestError = error
            bestScale = scale
            bestOffset = -low
        }
    }
    return (bestScale, bestOffset)
}

/// Whether every value in [lo, hi] is within half a step of a level of step·q − offset, q 0...15.
@inline(__always)
func int4GridCovers(lo: Float, hi: Float, step: Float, offset: Float) -> Bool {
    lo >= -offset - 0.5 * step && hi <= 15.5 * step - offset
}

/// Six-bit sc, m for every group given d, dmin: for group j, the neighbours (±1) of its fitted
/// scale/d and offset/dmin, each judged by the group's error with nearest codes. Returns Σ errors.
private func chooseInt4ScaleMins(_ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>, groups: Int,
                                 scales: SIMD8<Float>, offsets: SIMD8<Float>, lows: SIMD8<Float>, highs: SIMD8<Float>,
                                 d: Float, dmin: Float, keepRange: Bool,
                                 sc: inout SIMD8<UInt8>, m: inout SIMD8<UInt8>) -> Float {
    var total: Float = 0
    for j in 0..<groups {
        let xs = x + 32 * j, ws = wt + 32 * j
        let s0 = d > 0 ? Int(min(63, max(0, (scales[j] / d).rounded()))) : 0
        let m0 = dmin > 0 ? Int(min(63, max(0, (offsets[j] / dmin).rounded()))) : 0
        var best = Float.infinity, bestS = s0, bestM = m0
        for s in max(0, s0 - 1)...min(63, s0 + 1) where d > 0 || s == 0 {
            for mm in max(0, m0 - 1)...min(63, m0 + 1) where dmin > 0 || mm == 0 {
                let step = d * Float(s), offset = dmin * Float(mm)
                if keepRange && !int4GridCovers(lo: lows[j], hi: highs[j], step: step, offset: offset) { continue }
                let e = int4GroupError(xs, ws, step: step, offset: offset)
                if e < best { best = e; bestS = s; bestM = mm }
            }
        }
        if best == .infinity {
            // No neighbour covers the range: the covering integers for this d, dmin, if within 63.
            let need = -min(lows[j], 0)
            let mc = need == 0 ? 0 : dmin > 0 ? (need / dmin).rounded(.up) : 64
            let span = highs[j] + dmin * mc
            let sc0 = span <= 0 ? 0 : d > 0 ? (span / (15 * d)).rounded(.up) : 64
            guard mc <= 63, sc0 <= 63,
                  int4GridCovers(lo: lows[j], hi: highs[j], step: d * sc0, offset: dmin * mc) else { return .infinity }
            bestS = Int(sc0); bestM = Int(mc)
            best = int4GroupError(xs, ws, step: d * sc0, offset: dmin * mc)
        }
        sc[j] = UInt8(bestS)
        m[j] = UInt8(bestM)
        total += best
    }
    return total
}

/// The minimizing encoder (see the file comment). Writes a whole 144-byte superblock of which
/// groups ≥ `groups` stay zero.
func encodeInt4SuperblockMinimizing(_ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>, groups: Int,
                                    parameters p: Int4SearchParameters, into sb: UnsafeMutableRawPointer) {
    sb.initializeMemory(as: UInt8.self, repeating: 0, count: Int4Superblock.bytes)
    var scales = SIMD8<Float>(), offsets = SIMD8<Float>(), lows = SIMD8<Float>(), highs = SIMD8<Float>()
    for j in 0..<groups {
        let (s, o) = fitInt4Group(x + 32 * j, wt + 32 * j, parameters: p)
        scales[j] = s
        offsets[j] = o
        var lo = x[32 * j], hi = lo
        for i in 0..<32 { lo = min(lo, x[32 * j + i]); hi = max(hi, x[32 * j + i]) }
        lows[j] = lo
        highs[j] = hi
    }
    // Largest scale and offset map to 63 (Float16-rounded: neighbours 62/63 absorb the rounding).
    var d = Float(Float16(scales.max() / 63)), dmin = Float(Float16(offsets.max() / 63))
    var sc = SIMD8<UInt8>(), m = SIMD8<UInt8>()
    var error = chooseInt4ScaleMins(x, wt, groups: groups, scales: scales, offsets: offsets, lows: lows, highs: highs,
                                    d: d, dmin: dmin, keepRange: p.keepRange, sc: &sc, m: &m)
    if error == .infinity {
        // Six-bit values cannot cover some group's range with these d, dmin (rare): cover instead.
        encodeInt4SuperblockCovering(x, groups: groups, into: sb)
        return
    }

    // Refit d, dmin by least squares on the chosen integers: minimize Σ wt (d·A − dmin·B − x)²
    // with A = sc[j]·q, B = m[j] (q nearest), then re-choose sc, m; keep only improvements.
    for _ in 0..<p.superblockRefits {
        var aa: Float = 0, ab: Float = 0, bb: Float = 0, ax: Float = 0, bx: Float = 0
        for j in 0..<groups {
            let step = d * Float(sc[j]), offset = dmin * Float(m[j])
            let inv: Float = step > 0 ? 1 / step : 0
            let b = Float(m[j])
            var a2 = SIMD8<Float>(), w1 = SIMD8<Float>(), a1 = SIMD8<Float>(), axs = SIMD8<Float>(), xs1 = SIMD8<Float>()
            for k in 0..<4 {
                let xs = lanes(x + 32 * j, k), ws = lanes(wt + 32 * j, k)
                let a = Float(sc[j]) * nearestCodes((xs + offset) * inv)
                let wa = ws * a
                a2 += wa * a; a1 += wa; w1 += ws; axs += wa * xs; xs1 += ws * xs
            }
            aa += a2.sum(); ab += b * a1.sum(); bb += b * b * w1.sum()
            ax += axs.sum(); bx += b * xs1.sum()
        }
        // Normal equations: d·aa − dmin·ab = ax, d·ab − dmin·bb = bx.
        let det = ab * ab - aa * bb
        guard det != 0, aa > 0 else { break }
        let newD = (ab * bx - bb * ax) / det
        let newDmin = (aa * bx - ab * ax) / det
        guard newD > 0, newDmin >= 0, newD.isFinite, newDmin.isFinite else { break }
        let hd = Float(Float16(newD)), hdmin = Float(Float16(newDmin))
        // Re-choose the integers around the fits expressed in the new units.
        var sc2 = SIMD8<UInt8>(), m2 = SIMD8<UInt8>()
        let e2 = chooseInt4ScaleMins(x, wt, groups: groups, scales: scales, offsets: offsets, lows: lows, highs: highs,
                                     d: hd, dmin: hdmin, keepRange: p.keepRange, sc: &sc2, m: &m2)
        // Also the current integers kept, in the new units (the least-squares optimum for them).
        var e3: Float = 0
        for j in 0..<groups {
            let step = hd * Float(sc[j]), offset = hdmin * Float(m[j])
            if p.keepRange && !int4GridCovers(lo: lows[j], hi: highs[j], step: step, offset: offset) { e3 = .infinity; break }
            e3 += int4GroupError(x + 32 * j, wt + 32 * j, step: step, offset: offset)
        }
        if e3 <= e2 && e3 < error {
            error = e3; d = hd; dmin = hdmin
        } else if e2 < error {
            error = e2; d = hd; dmin = hdmin; sc = sc2; m = m2
        } else {
            break
        }
    }

    storeHalf(d, sb + Int4Superblock.dOffset)
    storeHalf(dmin, sb + Int4Superblock.dminOffset)
    Int4Superblock.packScaleMin(scales: (0..<8).map { sc[$0] }, mins: (0..<8).map { m[$0] },
                                into: (sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self))
    for j in 0..<groups {
        writeNearestCodes(x + 32 * j, step: d * Float(sc[j]), offset: dmin * Float(m[j]),
                          into: (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self))
    }
}
