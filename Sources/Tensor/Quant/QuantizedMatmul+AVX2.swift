// AVX2 kernels with explicit intrinsics (compiled only under `#if AVX2`, which Package.swift sets
// when the build machine has avx2 + fma + f16c) for decode and small M (M < gemmMinimumRows; from
// there on QuantizedGEMM+AVX2.swift). Shapes as in QuantizedMatmul.swift: weights [N, K],
// activation codes [M, K] (int8: natural layout; int5, int4: pairedHalves), y [M, N].
//
// Products (per group of 32, weight row r, activation row m):
//   int8: |w| = sign(w, w); x' = sign(x, w); p16 = maddubs(|w|, x')  (u8·s8 pairs → Int16, ≤ 2·128·127)
//         p32 = madd(p16, 1)  → 8 Int32 partial sums, exact
//         (`dotBytes`: with AVX-512 VNNI, `#if AVX512VNNI`, the pair is one `vpdpbusd`)
//   int4: one 32-byte load of nibbles covers a PAIR of groups (2p, 2p+1):
//         lo = v & 0xF = [g0 w0..15 | g1 w0..15],  hi = (v >> 4) & 0xF = [g0 w16..31 | g1 w16..31]
//         p16 = maddubs(lo, xlo) + maddubs(hi, xhi)  (≤ 2·2·15·127 = 7620, fits Int16; the
//         pairedHalves activation order makes xlo/xhi plain 32-byte loads)
//         p32 += madd(p16, [sc_2p ×8 | sc_2p+1 ×8])  (six-bit scales from one vpshufb): the whole
//         superblock's Σ_j sc_j·dot_j stays in Int32, because int4 activations have one scale per
//         superblock (as ggml's Q8_K); once per superblock: acc += float(p32)·(d·dx)
//         + (−dmin·m[0..<8])·(dx·Σqx)[0..<8].
//   int5: as int4's pairs, with the fifth bits ORed in (one 32-byte qh load per superblock, bit
//         plane 2p / 2p+1 for lo / hi: a shift and a mask each) and codes q in 0...31 unsigned, so
//         no vpsignb: p32 = madd(maddubs(lo, xlo) + maddubs(hi, xhi), 1) (≤ 2·2·31·127 fits Int16);
//         in float per group (int5 activations have one scale per 32, as int8), lane g of a vector:
//         acc += d·(float(dot)·dx − 16·(dx·Σqx)).
//   The int4 and int5 kernels have no VNNI form: they use maddubs + madd on every build.
//
// Register blocking (AVX2 has 16 ymm registers): one weight row × MB ≤ 8 activation rows per
// call (`int8Rows`, `int4Rows`, `int5Rows`, specialized per MB so the accumulators stay in
// registers where they fit); decode is the MB = 1 case. The weight row's unpacking (int4, int5) and
// scales are shared by the MB rows, and each activation row then runs exactly the instructions it
// would run alone, so its result does not depend on M (`QuantKernels.rowInvariantRows`: a
// speculative verification of k + 1 rows computes what k + 1 decode steps would):
//   - int8: eight groups per step, per activation row 8 × (vpsignb ×2, `dotBytes`) reduced by a
//     `vphaddd` tree (`laneSums8`) to one vector of 8 group dots, so the float work (conversion,
//     weight × activation scale, FMA) is once per 8 groups and row.
//   - int4: per superblock the header decoded with byte shuffles (`int4HeaderVector`), Int32
//     accumulators per activation row over the superblock, one float FMA pair per superblock and row.
//   - int5: per superblock a row's 4 pair vectors reduced with 3 vphaddd + vpermd to one vector of
//     8 group dots, float work once per superblock and row.
//   M = 8 exactly (past `QuantKernels.rowInvariantRows`) keeps the faster tiles whose accumulator
//   LANES are the 8 activation rows (`int8Tile8`, `int4Tile8`, `int5Tile`): the float work once
//   per group or superblock for all 8 rows; they sum in another order.
//   Activation tiles are the outer loop and the thread's rows the inner one, so a tile's codes
//   stay in L1. Threads split output rows; each weight byte is read from DRAM once per call (the
//   weight row is in L1 for activation rows 2...MB). Every kernel prefetches its rows ahead
//   (Prefetch.swift).
// docs/kernels.md lists the inner loops as compiled (objdump) and the measurements behind these
// choices; re-check the listing after any change to a hot loop.
// QuantKernelsTests.testIntrinsicPathIsCompiledIn fails if this path (or its VNNI form on a VNNI
// CPU) is not compiled in, and testKernelInstructions if a kernel loses its byte products or its
// prefetch.

#if AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func load256(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }
@inline(__always) private func load128(_ p: UnsafeRawPointer) -> __m128i { p.loadUnaligned(as: __m128i.self) }
@inline(__always) private func loadFloats(_ p: UnsafePointer<Float>) -> __m256 { UnsafeRawPointer(p).loadUnaligned(as: __m256.self) }

@inline(__always) private func horizontalSum(_ v: __m256) -> Float {
    let s = v.lowHalf + v.highHalf
    let t = s.lowHalf + s.highHalf
    return t[0] + t[1]
}

/// Int32 lanes of Σ u·s over each 4 adjacent bytes (u unsigned, s signed), for the int8 kernels:
/// `vpdpbusd` where the build has AVX-512 VNNI, else `vpmaddubsw` (pairs → Int16; |u·s| pair sums
/// ≤ 2·255·127 would saturate, but the unsigned side here is |w| ≤ 128) then `vpmaddwd` by 1.
/// `vpdpbusd` comes through `_mm256_mask_dpbusd_epi32` with a full mask: `_mm256_dpbusd_epi32` is
/// a C macro, which Swift does not import.
@inline(__always)
private func dotBytes(_ u: __m256i, _ s: __m256i, _ ones: __m256i) -> __m256i {
    #if AVX512VNNI
    return _mm256_mask_dpbusd_epi32(_mm256_setzero_si256(), 0xFF, u, s)
    #else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones)
    #endif
}

// MARK: - activation quantization

/// One group of 32 activations to int8 codes in order (see `quantizeGroup`): vcvtps2dq rounds to
/// nearest, ties to even (the default MXCSR mode), vpackssdw/vpacksswb saturate, vpermd restores
/// the order the in-lane packs interleave, vpmaxsb keeps codes ≥ −127.
@inline(__always)
private func groupCodesAVX2(_ x: UnsafePointer<Float>, inverse: Float) -> __m256i {
    let s = _mm256_set1_ps(inverse)
    let q0 = _mm256_cvtps_epi32(_mm256_mul_ps(loadFloats(x), s)), q1 = _mm256_cvtps_epi32(_mm256_mul_ps(loadFloats(x + 8), s))
    let q2 = _mm256_cvtps_epi32(_mm256_mul_ps(loadFloats(x + 16), s)), q3 = _mm256_cvtps_epi32(_mm256_mul_ps(loadFloats(x + 24), s))
    // packs work within 128-bit lanes: bytes come out as dwords [q0lo q1lo q2lo q3lo | q0hi q1hi q2hi q3hi].
    let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3))
    return _mm256_max_epi8(_mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)), _mm256_set1_epi8(-127))
}

/// Σ of 32 codes: sign-extended to Int16 and added.
@inline(__always)
private func codeSumAVX2(_ codes: __m256i) -> Int32 {
    let first = _mm256_castsi256_si128(codes),
        second = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(codes, _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3)))
    let wide = _mm256_add_epi16(_mm256_cvtepi8_epi16(first), _mm256_cvtepi8_epi16(second))
    let sum32 = unsafeBitCast(_mm256_madd_epi16(wide, _mm256_set1_epi16(1)), to: SIMD8<Int32>.self)
    return sum32.wrappedSum()
}

/// One group of 32 activations to int8 codes: the first 16 to `low`, the last 16 to `high`.
/// Returns Σ codes.
@inline(__always)
func quantizeGroupAVX2(
    _ x: UnsafePointer<Float>, inverse: Float, low: UnsafeMutablePointer<Int8>, high: UnsafeMutablePointer<Int8>
) -> Int32 {
    let ordered = groupCodesAVX2(x, inverse: inverse)
    let first = _mm256_castsi256_si128(ordered),
        second = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(ordered, _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3)))
    UnsafeMutableRawPointer(low).storeBytes(of: first, as: __m128i.self)
    UnsafeMutableRawPointer(high).storeBytes(of: second, as: __m128i.self)
    return codeSumAVX2(ordered)
}

/// One group of 32 activations to int8 codes, stored as the `interleavedRows` layout wants them:
/// codes 4j ..< 4j+4 at `to` + 32·j. Returns Σ codes.
@inline(__always)
func quantizeGroupInterleavedAVX2(_ x: UnsafePointer<Float>, inverse: Float, to: UnsafeMutablePointer<Int8>) -> Int32 {
    let ordered = groupCodesAVX2(x, inverse: inverse)
    let pieces = unsafeBitCast(ordered, to: SIMD8<UInt32>.self)
    let p = UnsafeMutableRawPointer(to)
    for j in 0..<8 { p.storeBytes(of: pieces[j], toByteOffset: 32 * j, as: UInt32.self) }
    return codeSumAVX2(ordered)
}

/// max |x[i]| over `count` (a multiple of 8) values: vandps (clear the sign) + vmaxps, then a
/// shuffle reduction.
@inline(__always)
func maxMagnitudeAVX2(_ x: UnsafePointer<Float>, count: Int) -> Float {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF))
    var m = _mm256_setzero_ps()
    for i in stride(from: 0, to: count, by: 8) { m = _mm256_max_ps(m, _mm256_and_ps(loadFloats(x + i), magnitude)) }
    var h = _mm_max_ps(
        _mm256_castps256_ps128(m), _mm256_castps256_ps128(_mm256_permutevar8x32_ps(m, _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3))))
    h = _mm_max_ps(h, _mm_movehl_ps(h, h))
    h = _mm_max_ss(h, _mm_movehdup_ps(h))
    return _mm_cvtss_f32(h)
}

/// The Float16 at `p` in all 8 lanes: vpbroadcastw from memory + vcvtph2ps. Written with
/// intrinsics because a scalar half converted and broadcast compiles to vpinsrw into a register
/// that also holds an accumulator: a false dependency from each group's scale to the previous
/// group's sums.
@inline(__always)
func broadcastHalf(_ p: UnsafeRawPointer) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(p.loadUnaligned(as: Int16.self)))
}

// MARK: - int8

/// One int8 weight row × MB ≤ 8 activation rows m0 ..< m0+MB, eight groups per step: per activation
/// row the eight groups' Int32 partial sums are reduced by a `vphaddd` tree (`laneSums8`) to one
/// vector of 8 group dots, so the float work (conversion, weight scale × activation scale, FMA) is
/// once per 8 groups: per 8 groups and row 8 × (vpsignb ×2, `dotBytes`) + 6 vphaddd, the 8 weight
/// scales gathered into one vcvtph2ps once for the MB rows; a row's last step may hold fewer than 8
/// groups (zero lanes). Every activation row runs the same instructions whatever MB is,
/// so a row's result does not depend on the rows beside it (decode is MB = 1; see
/// `QuantKernels.rowInvariantRows`). The weight bytes come from DRAM for row 0 and from L1 after.
/// Prefetches one line per 64 bytes `prefetchDistance` ahead.
@inline(__always)
private func int8Rows(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int, MB: Int,
    prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 &* cols)
    let xs = a.scales + m0 &* groups
    let ones = _mm256_set1_epi16(1)
    var c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0
    @inline(__always) func forEach(_ body: (inout __m256, Int) -> Void) {
        body(&c0, 0)
        if MB > 1 { body(&c1, 1) }
        if MB > 2 { body(&c2, 2) }
        if MB > 3 { body(&c3, 3) }
        if MB > 4 { body(&c4, 4) }
        if MB > 5 { body(&c5, 5) }
        if MB > 6 { body(&c6, 6) }
        if MB > 7 { body(&c7, 7) }
    }
    /// Groups g ..< g + count (count ≤ 8; a row's last step may hold fewer, whose missing lanes
    /// give zero dots and zero scales and so add exactly nothing).
    @inline(__always) func step(_ g: Int, _ count: Int) {
        let b = row + g &* Int8Block.bytes
        // 8 blocks = 272 bytes: five lines ahead.
        for line in 0..<5 { prefetchForRead(b + (prefetchDistance &+ line &* 64)) }
        @inline(__always) func scaleBits(_ k: Int) -> Int16 {
            k < count ? Int16(bitPattern: (b + k * Int8Block.bytes).loadUnaligned(as: UInt16.self)) : 0
        }
        let weightScales = _mm256_cvtph_ps(
            _mm_setr_epi16(
                scaleBits(0), scaleBits(1), scaleBits(2), scaleBits(3), scaleBits(4), scaleBits(5), scaleBits(6), scaleBits(7)))
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
        // The step's weight codes and their magnitudes, shared by the MB rows.
        @inline(__always) func codes(_ k: Int) -> (__m256i, __m256i) {
            guard k < count else { return (_mm256_setzero_si256(), _mm256_setzero_si256()) }
            let wv = load256(b + k * Int8Block.bytes + Int8Block.quantsOffset)
            return (wv, _mm256_sign_epi8(wv, wv))
        }
        let w0 = codes(0), w1 = codes(1), w2 = codes(2), w3 = codes(3), w4 = codes(4), w5 = codes(5), w6 = codes(6), w7 = codes(7)
        forEach { acc, i in
            let xi = x + (i &* cols &+ g &* 32)
            @inline(__always) func p(_ k: Int, _ w: (__m256i, __m256i)) -> __m256i {
                guard k < count else { return _mm256_setzero_si256() }
                return dotBytes(w.1, _mm256_sign_epi8(load256(xi + k * 32), w.0), ones)
            }
            let dots = laneSums8(p(0, w0), p(1, w1), p(2, w2), p(3, w3), p(4, w4), p(5, w5), p(6, w6), p(7, w7))  // lane k = group k
            let sx = xs + (i &* groups &+ g)
            let activationScales = count == 8 ? loadFloats(sx) : _mm256_maskload_ps(sx, mask)
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(weightScales, activationScales), acc)
        }
    }
    var g = 0
    while g &+ 8 <= groups {
        step(g, 8)  // count constant: no per-group tests
        g &+= 8
    }
    if g < groups { step(g, groups &- g) }
    forEach { acc, i in y[(m0 + i) * w.rows + n] = horizontalSum(acc) }
}

/// M = 8 exactly (past `QuantKernels.rowInvariantRows`, where sgemm takes the float formats too):
/// a tile of R rows × the 8 activation rows whose accumulator LANES are activation rows: the 8
/// Int32 vectors of a group are reduced with a `vphaddd` tree to one vector of 8 row dots, so the
/// float conversion, the scale multiply and the FMA happen once per (row, group). Sums in another
/// order than `int8Rows`, and 1.1-1.2x its speed at 8 rows (batch 8 of the default model).
@inline(__always)
private func int8Tile8(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    n: Int, m0: Int, R: Int, prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row0 = w.rowPointer(n), row1 = w.rowPointer(R > 1 ? n + 1 : n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let dx = a.scalesByGroup + (m0 / 8) * groups * 8
    let ones = _mm256_set1_epi16(1)
    var acc0 = _mm256_setzero_ps(), acc1 = acc0
    @inline(__always) func reduce8(_ w: __m256i, _ absW: __m256i, _ g: Int) -> __m256i {
        @inline(__always) func p(_ i: Int) -> __m256i {
            dotBytes(absW, _mm256_sign_epi8(load256(x + i * cols + g * 32), w), ones)
        }
        return laneSums8(p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7))
    }
    for g in 0..<groups {
        let scales = loadFloats(dx + g * 8)
        let b0 = row0 + g * Int8Block.bytes
        prefetchForRead(b0 + prefetchDistance)
        let w0 = load256(b0 + Int8Block.quantsOffset)
        acc0 = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(reduce8(w0, _mm256_sign_epi8(w0, w0), g)),
            _mm256_mul_ps(broadcastHalf(b0), scales), acc0)
        if R > 1 {
            let b1 = row1 + g * Int8Block.bytes
            prefetchForRead(b1 + prefetchDistance)
            let w1 = load256(b1 + Int8Block.quantsOffset)
            acc1 = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(reduce8(w1, _mm256_sign_epi8(w1, w1), g)),
                _mm256_mul_ps(broadcastHalf(b1), scales), acc1)
        }
    }
    for i in 0..<8 {
        y[(m0 + i) * w.rows + n] = acc0[i]
        if R > 1 { y[(m0 + i) * w.rows + n + 1] = acc1[i] }
    }
}


/// Writes accumulator i (its 8 lanes summed) to y[m0 + i][n], i < MB.
@inline(__always)
private func storeTile(
    _ y: UnsafeMutablePointer<Float>, rows: Int, n: Int, m0: Int, MB: Int,
    _ c0: __m256, _ c1: __m256, _ c2: __m256, _ c3: __m256,
    _ c4: __m256, _ c5: __m256, _ c6: __m256, _ c7: __m256
) {
    @inline(__always) func put(_ c: __m256, _ i: Int) {
        if i < MB { y[(m0 + i) * rows + n] = horizontalSum(c) }
    }
    put(c0, 0); put(c1, 1); put(c2, 2); put(c3, 3); put(c4, 4); put(c5, 5); put(c6, 6); put(c7, 7)
}

/// Eight Int32 vectors → one whose lane i is the sum of v_i's 8 lanes (6 vphaddd, then the two
/// 128-bit halves added: vinserti128 + vperm2i128 + vpaddd). Used where accumulator lanes are
/// activation rows or groups, so the float work is once per 8 of them.
@inline(__always)
private func laneSums8(
    _ v0: __m256i, _ v1: __m256i, _ v2: __m256i, _ v3: __m256i,
    _ v4: __m256i, _ v5: __m256i, _ v6: __m256i, _ v7: __m256i
) -> __m256i {
    let h0123 = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3)), to: SIMD8<Int32>.self)
    let h4567 = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7)), to: SIMD8<Int32>.self)
    // h0123 = [v0..v3 over lanes 0-3 | v0..v3 over lanes 4-7], h4567 likewise.
    let sum =
        SIMD8<Int32>(lowHalf: h0123.lowHalf, highHalf: h4567.lowHalf) &+ SIMD8<Int32>(lowHalf: h0123.highHalf, highHalf: h4567.highHalf)
    return unsafeBitCast(sum, to: __m256i.self)
}

// One specialization per activation-row count, so each keeps its accumulators in registers.
private typealias RowsFunction = @Sendable (QuantizedMatrix, QuantizedActivations, UnsafeMutablePointer<Float>, Int, Int, Int) -> Void
private let int8RowFunctions: [RowsFunction] = [
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 1, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 2, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 3, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 4, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 5, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 6, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 7, prefetchDistance: $5) },
    { int8Rows($0, $1, $2, n: $3, m0: $4, MB: 8, prefetchDistance: $5) },
]

private let int8Tile8Single: RowsFunction = { int8Tile8($0, $1, $2, n: $3, m0: $4, R: 1, prefetchDistance: $5) }
private let int8Tile8Pair: RowsFunction = { int8Tile8($0, $1, $2, n: $3, m0: $4, R: 2, prefetchDistance: $5) }

/// Decode (M = 1): `int8Rows` for one activation row, not inlined into the row loop.
@inline(never)
private func int8Decode(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m: Int,
    prefetchDistance: Int
) {
    int8Rows(w, a, y, n: n, m0: m, MB: 1, prefetchDistance: prefetchDistance)
}

func avx2Int8(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "int8 activation blocks must start at a multiple of 8 rows")
    // The prefetch setting is read once per call: a global `var` read inside the per-row kernel
    // costs a dynamic exclusivity check (swift_beginAccess) per row.
    let distance = ms.count == 1 ? QuantKernels.decodePrefetchDistance : QuantKernels.prefetchDistance
    if ms.count == 1 {
        for n in rows { int8Decode(w, a, y, n: n, m: ms.lowerBound, prefetchDistance: distance) }
        return
    }
    // Activation tiles outer, rows inner (as avx2Int4): a tile's codes stay in L1 while the thread's
    // rows cycle through L2.
    var m0 = ms.lowerBound
    while m0 < ms.upperBound {
        let mb = min(8, ms.upperBound - m0)
        if mb == 8 {
            var n = rows.lowerBound
            while n < rows.upperBound {
                let pair = rows.upperBound - n >= 2
                if pair { int8Tile8Pair(w, a, y, n, m0, distance) } else { int8Tile8Single(w, a, y, n, m0, distance) }
                n += pair ? 2 : 1
            }
        } else {
            let tile = int8RowFunctions[mb - 1]
            for n in rows { tile(w, a, y, n, m0, distance) }
        }
        m0 += mb
    }
}

// MARK: - int4

/// A superblock's header, ready for the tile kernels: (its 8 six-bit scales for `vpshufb`, see
/// `int4HeaderVector`; −dmin·m[0..<8]; d).
@inline(__always)
private func int4Header(_ sb: UnsafeRawPointer) -> (__m256i, __m256, Float) {
    let (scaleBytes, mins, dd) = int4HeaderVector(sb)
    return (scaleBytes, _mm256_mul_ps(mins, _mm256_set1_ps(-dd[1])), dd[0])
}

/// vpshufb control spreading scale byte j over the Int16 lanes of the low 128 bits and byte j+1
/// over the high 128 bits (0x80: zero the high byte); add j to every byte for pair (j, j+1).
@inline(__always)
private func int4ScaleSpread() -> __m256i {
    _mm256_setr_epi8(
        0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128,
        1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128)
}

/// The Int32 products of one superblock (its `count` ≤ 8 groups of nibbles at `nib`) with `rows` ≤ 8
/// activation rows, x pointing at row 0's codes of the superblock's first group (row i at
/// x + i·cols): lane sums of result i are Σ_j sc_j · Σ_k q_jk · x_i,jk. Per pair of groups and row:
/// 2 vpmaddubsw (x from memory), vpaddw, vpmaddwd (by the six-bit scales), vpaddd; the nibble
/// unpacking and the scale shuffle are shared by the rows. Results past `rows` are zero.
@inline(__always)
private func int4SuperblockProducts(
    _ nib: UnsafeRawPointer, _ scaleBytes: __m256i, count: Int, x: UnsafeRawPointer,
    cols: Int, rows: Int
)
    -> (__m256i, __m256i, __m256i, __m256i, __m256i, __m256i, __m256i, __m256i)
{
    let nibbleMask = _mm256_set1_epi8(0x0F)
    let spread = int4ScaleSpread()
    var i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, i7 = i0
    @inline(__always) func forEach(_ body: (inout __m256i, Int) -> Void) {
        body(&i0, 0)
        if rows > 1 { body(&i1, 1) }
        if rows > 2 { body(&i2, 2) }
        if rows > 3 { body(&i3, 3) }
        if rows > 4 { body(&i4, 4) }
        if rows > 5 { body(&i5, 5) }
        if rows > 6 { body(&i6, 6) }
        if rows > 7 { body(&i7, 7) }
    }
    @inline(__always) func pair(_ j: Int) {
        let v = load256(nib + j &* 16)
        let lo = _mm256_and_si256(v, nibbleMask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibbleMask)
        let sc16 = _mm256_shuffle_epi8(scaleBytes, _mm256_add_epi8(spread, _mm256_set1_epi8(Int8(truncatingIfNeeded: j))))
        forEach { acc, i in
            let xp = x + (i &* cols &+ j &* 32)
            let p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, load256(xp)), _mm256_maddubs_epi16(hi, load256(xp + 32)))
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sc16))
        }
    }
    var j = 0
    if count == 8 {
        // j constant in each step: the scale-shuffle control is a constant.
        pair(0); pair(2); pair(4); pair(6)
        j = 8
    }
    while j &+ 2 <= count {
        pair(j)
        j &+= 2
    }
    if j < count {
        // A last unpaired group (G odd; its activation codes are in natural order).
        let mask = _mm_set1_epi8(0x0F)
        let v = load128(nib + j * 16)
        let u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask))
        let sc16 = _mm256_shuffle_epi8(scaleBytes, _mm256_add_epi8(_mm256_set1_epi16(-0x8000), _mm256_set1_epi8(Int8(j))))
        forEach { acc, i in
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, load256(x + i * cols + j * 32)), sc16))
        }
    }
    return (i0, i1, i2, i3, i4, i5, i6, i7)
}

/// One int4 weight row × MB ≤ 8 activation rows, activations with one scale per superblock
/// (`scaleBlock` 256). Per superblock and activation row the whole Σ_j sc[j]·Σ_i q·x is exact in
/// Int32 (`vpmaddwd` multiplies the Int16 pair sums by the six-bit scales: ≤ 4·2·7620·63 < 2^22),
/// so the float work happens once per superblock, not per group:
///   acc_i += float(Σ) · (d · dx_i) + (−dmin·m[0..<8]) · (dx_i·Σqx_i)[0..<8],  y_i = Σ lanes of acc_i
/// Per pair of groups and activation row: 2 vpmaddubsw (x from memory), vpaddw, vpmaddwd,
/// vpaddd; the header (decoded in vector registers, `int4HeaderVector`), the nibble unpacking and
/// the scale shuffle (5 instructions) are shared by the MB rows. Every activation row runs the
/// same instructions whatever MB is, so a row's result does not depend on the rows beside it
/// (decode is MB = 1; see `QuantKernels.rowInvariantRows`).
@inline(__always)
private func int4Rows(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int, MB: Int,
    prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
    var f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let count = min(8, groups - s * 8)
        let sb = row + s * Int4Superblock.bytes
        prefetchSuperblock(sb, prefetchDistance)
        let (scaleBytes, negMins, d) = int4Header(sb)
        let nib = sb + Int4Superblock.nibblesOffset
        let (i0, i1, i2, i3, i4, i5, i6, i7) = int4SuperblockProducts(
            nib, scaleBytes, count: count,
            x: x + s * 256, cols: cols, rows: MB)
        let sumMask = _mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count)), lanes)
        @inline(__always) func finish(_ f: inout __m256, _ acc: __m256i, _ i: Int) {
            let base = (m0 + i) * groups + s * 8
            let t = count == 8 ? loadFloats(a.sums + base) : _mm256_maskload_ps(a.sums + base, sumMask)
            f = _mm256_fmadd_ps(negMins, t, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(d * a.scales[base]), f))
        }
        finish(&f0, i0, 0)
        if MB > 1 { finish(&f1, i1, 1) }
        if MB > 2 { finish(&f2, i2, 2) }
        if MB > 3 { finish(&f3, i3, 3) }
        if MB > 4 { finish(&f4, i4, 4) }
        if MB > 5 { finish(&f5, i5, 5) }
        if MB > 6 { finish(&f6, i6, 6) }
        if MB > 7 { finish(&f7, i7, 7) }
    }
    storeTile(y, rows: w.rows, n: n, m0: m0, MB: MB, f0, f1, f2, f3, f4, f5, f6, f7)
}

/// M = 8 exactly (as `int8Tile8`): one int4 weight row × the 8 activation rows, with accumulator
/// LANES = activation rows: the products per pair of groups are those of `int4Rows` (Int32 per
/// activation row over the superblock), then per superblock `laneSums8` turns the 8 Int32 vectors
/// into one, and the float work is shared by the 8 rows (another order than `int4Rows`):
///   f += float(Σ) · (d · dx[0..<8]) + Σ_j (−dmin·m_j) · (dx·Σqx_j)[0..<8]   (by-group arrays)
/// `int4Rows` at MB = 8 keeps 8 float accumulators beside the 8 Int32 ones: more than AVX2's 16
/// registers, so it spills (1.5B batch 8: ~8 % slower).
@inline(never)
private func int4Tile8(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int,
    prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let dxs = a.scalesByGroup + (m0 / 8) * groups * 8, xsums = a.sumsByGroup + (m0 / 8) * groups * 8
    var f = _mm256_setzero_ps(), fa = f, fb = f
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let count = min(8, groups - s * 8)
        let sb = row + s * Int4Superblock.bytes
        prefetchSuperblock(sb, prefetchDistance)
        let (scaleBytes, negMins, d) = int4Header(sb)
        let nib = sb + Int4Superblock.nibblesOffset
        let (i0, i1, i2, i3, i4, i5, i6, i7) = int4SuperblockProducts(
            nib, scaleBytes, count: count,
            x: x + s * 256, cols: cols, rows: 8)
        let g0 = s * 8
        let dots = laneSums8(i0, i1, i2, i3, i4, i5, i6, i7)
        f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(_mm256_set1_ps(d), loadFloats(dxs + g0 * 8)), f)
        // The offset term into two more accumulators, alternating: one chain of 8 dependent FMAs
        // per superblock (4 cycles each) stalls the loop.
        let nm = unsafeBitCast(negMins, to: SIMD8<Float>.self)
        var k = 0
        while k + 2 <= count {
            fa = _mm256_fmadd_ps(_mm256_set1_ps(nm[k]), loadFloats(xsums + (g0 + k) * 8), fa)
            fb = _mm256_fmadd_ps(_mm256_set1_ps(nm[k + 1]), loadFloats(xsums + (g0 + k + 1) * 8), fb)
            k += 2
        }
        if k < count { fa = _mm256_fmadd_ps(_mm256_set1_ps(nm[k]), loadFloats(xsums + (g0 + k) * 8), fa) }
    }
    let out = unsafeBitCast(_mm256_add_ps(f, _mm256_add_ps(fa, fb)), to: SIMD8<Float>.self)
    for i in 0..<8 { y[(m0 + i) * w.rows + n] = out[i] }
}


private let int4Tile8Function: RowsFunction = { int4Tile8($0, $1, $2, n: $3, m0: $4, prefetchDistance: $5) }

private let int4RowFunctions: [RowsFunction] = [
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 1, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 2, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 3, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 4, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 5, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 6, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 7, prefetchDistance: $5) },
    { int4Rows($0, $1, $2, n: $3, m0: $4, MB: 8, prefetchDistance: $5) },
]

/// The header of a superblock decoded in vector registers from one 16-byte load of
/// [d, dmin: Float16][12 packed six-bit scale/min bytes]: ggml's `get_scale_min_k4` as byte
/// shuffles and masks, about 12 vector instructions (the shuffles compile to vpshufd) instead of
/// scalar shifts and masks and the moves into vector registers. Returns the 8 scales in bytes
/// 0..<8 of both 128-bit lanes (for `vpshufb`), the 8 mins as floats, [d, dmin, …] as floats.
@inline(__always)
func int4HeaderVector(_ sb: UnsafeRawPointer) -> (__m256i, __m256, __m128) {
    let h = load128(sb)
    // [q0..3 | q8..11 | q4..7 | q8..11] (q_k is header byte 4 + k)
    let a = _mm_shuffle_epi8(h, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15))
    // sc0..3 = q0..3 & 63, sc4..7 low = q8..11 & 15, m0..3 = q4..7 & 63, m4..7 low = q8..11 >> 4
    let low = _mm_or_si128(
        _mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)),
        _mm_and_si128(_mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)))
    // high bits: sc4..7 |= (q0..3 >> 6) << 4, m4..7 |= (q4..7 >> 6) << 4; (x & 0xC0) >> 2 per byte
    // (the 16-bit shift moves only zeros across bytes once the low six bits are cleared)
    let c = _mm_shuffle_epi8(h, _mm_setr_epi8(-128, -128, -128, -128, 4, 5, 6, 7, -128, -128, -128, -128, 8, 9, 10, 11))
    let sm = _mm_or_si128(low, _mm_srli_epi16(_mm_and_si128(c, _mm_set1_epi8(-64)), 2))
    let mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(sm, sm)))
    return (_mm256_broadcastsi128_si256(sm), mins, _mm_cvtph_ps(h))
}

/// Decode (M = 1): `int4Rows` for one activation row, not inlined into the row loop.
@inline(never)
private func int4DecodeRow(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ m: Int,
    _ prefetchDistance: Int
) {
    int4Rows(w, a, y, n: n, m0: m, MB: 1, prefetchDistance: prefetchDistance)
}

/// Prefetches the three cache lines of the superblock `distance` bytes past `sb` (int4's 144 or
/// int5's 176 bytes).
@inline(__always)
private func prefetchSuperblock(_ sb: UnsafeRawPointer, _ distance: Int) {
    prefetchForRead(sb + distance)
    prefetchForRead(sb + (distance &+ 64))
    prefetchForRead(sb + (distance &+ 128))
}

func avx2Int4(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "int4 activation blocks must start at a multiple of 8 rows")
    if ms.count == 1 {
        let distance = QuantKernels.decodePrefetchDistance  // once per call (see avx2Int8)
        for n in rows { int4DecodeRow(w, a, y, n, ms.lowerBound, distance) }
        return
    }
    let tileDistance = QuantKernels.prefetchDistance
    // Activation tiles outer, rows inner: one tile's codes (8 × K bytes, 7 KB at K = 896) stay in L1
    // while the thread's chunk of weight rows (~150 KB) cycles through L2.
    var m0 = ms.lowerBound
    while m0 < ms.upperBound {
        let mb = min(8, ms.upperBound - m0)
        let tile = mb == 8 ? int4Tile8Function : int4RowFunctions[mb - 1]
        for n in rows { tile(w, a, y, n, m0, tileDistance) }
        m0 += mb
    }
}
// MARK: - int5

/// Bit 4 of every byte of code vector k's fifth bits: qh byte b holds vector k's bit for byte b at
/// bit k, so a 16-bit shift by 4 − k (left) or k − 4 (right) puts it at bit 4 of the same byte
/// (source and target bit are in one byte, so what the shift carries across bytes is masked off).
/// k is a constant wherever a whole superblock is unrolled (immediate shifts).
@inline(__always)
private func int5FifthBits(_ qh: __m256i, _ k: Int) -> __m256i {
    let bit4 = _mm256_set1_epi8(0x10)
    if k < 4 { return _mm256_and_si256(_mm256_sll_epi16(qh, _mm_cvtsi32_si128(Int32(4 - k))), bit4) }
    if k == 4 { return _mm256_and_si256(qh, bit4) }
    return _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(Int32(k - 4))), bit4)
}

/// The two code vectors (0...31 per byte) of pair chunk p: low nibbles [A w0..15 | B w0..15] with
/// the fifth bits of vector 2p, high nibbles [A w16..31 | B w16..31] with those of 2p + 1 — the
/// order of the pairedHalves activations. vmovdqu, vpand ×2, vpsrlw, then per vector a shift,
/// vpand and vpor for the fifth bits: ~5 instructions per group where Q5_0's own block needs ~9.
@inline(__always)
func int5Pair(_ sb: UnsafeRawPointer, _ qh: __m256i, _ p: Int) -> (__m256i, __m256i) {
    let mask = _mm256_set1_epi8(0x0F)
    let v = load256(sb + Int5Superblock.nibblesOffset + 32 * p)
    return (
        _mm256_or_si256(_mm256_and_si256(v, mask), int5FifthBits(qh, 2 * p)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), int5FifthBits(qh, 2 * p + 1))
    )
}

/// Int32 lanes whose low half sums to A's dot with one activation row and high half to B's
/// (x: the row's pairedHalves codes of the pair): vpmaddubsw ×2, vpaddw (≤ 2·2·31·127 fits Int16),
/// vpmaddwd by 1.
@inline(__always)
private func int5PairDots(_ lo: __m256i, _ hi: __m256i, _ x: UnsafeRawPointer, _ ones: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, load256(x)), _mm256_maddubs_epi16(hi, load256(x + 32))), ones)
}

/// Σ q·x over the unpaired last group j of a superblock (a row with an odd group count; x its 32
/// codes, natural order in the pairedHalves layout). Scalar: only odd test shapes have one.
@inline(never)
private func int5UnpairedDot(_ sb: UnsafeRawPointer, _ j: Int, _ x: UnsafePointer<Int8>) -> Int32 {
    var dot: Int32 = 0
    for i in 0..<32 { dot &+= Int32(Int5Superblock.code(sb, j, i)) &* Int32(x[i]) }
    return dot
}

/// One int5 weight row × MB ≤ 8 activation rows m0 ..< m0+MB, a superblock per step: the pairs'
/// codes are unpacked once (`int5Pair`) for the MB rows; per activation row `int5PairDots` per
/// pair, then three vphaddd and a vpermd give one vector of the 8 group dots, and the float work is
/// once per superblock: acc += d[0..<8] · (float(dots) · sx[0..<8] − 16 · (sx·Σqx)[0..<8]). An
/// unpaired last group (odd group counts) goes to a scalar tail. Every activation row runs the
/// same instructions whatever MB is, so a row's result does not depend on the rows beside it
/// (decode is MB = 1; see `QuantKernels.rowInvariantRows`).
@inline(__always)
private func int5Rows(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int, MB: Int,
    prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 &* cols)
    let ones = _mm256_set1_epi16(1)
    let natural = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)
    let minusSixteen = _mm256_set1_ps(-16)
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
    let zero = _mm256_setzero_si256()
    var c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0
    var tails = SIMD8<Float>()
    @inline(__always) func forEach(_ body: (inout __m256, Int) -> Void) {
        body(&c0, 0)
        if MB > 1 { body(&c1, 1) }
        if MB > 2 { body(&c2, 2) }
        if MB > 3 { body(&c3, 3) }
        if MB > 4 { body(&c4, 4) }
        if MB > 5 { body(&c5, 5) }
        if MB > 6 { body(&c6, 6) }
        if MB > 7 { body(&c7, 7) }
    }
    var s = 0, g0 = 0
    while g0 < groups {
        let count = min(8, groups &- g0)
        let sb = row + s &* Int5Superblock.bytes
        prefetchSuperblock(sb, prefetchDistance)
        let qh = load256(sb + Int5Superblock.highBitsOffset)
        let (l0, h0) = count >= 2 ? int5Pair(sb, qh, 0) : (zero, zero)
        let (l1, h1) = count >= 4 ? int5Pair(sb, qh, 1) : (zero, zero)
        let (l2, h2) = count >= 6 ? int5Pair(sb, qh, 2) : (zero, zero)
        let (l3, h3) = count >= 8 ? int5Pair(sb, qh, 3) : (zero, zero)
        let d = _mm256_cvtph_ps(load128(sb))
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count & ~1)), lanes)
        forEach { acc, i in
            let xi = x + (i &* cols &+ g0 &* 32)
            let q0 = count >= 2 ? int5PairDots(l0, h0, xi, ones) : zero
            let q1 = count >= 4 ? int5PairDots(l1, h1, xi + 64, ones) : zero
            let q2 = count >= 6 ? int5PairDots(l2, h2, xi + 128, ones) : zero
            let q3 = count >= 8 ? int5PairDots(l3, h3, xi + 192, ones) : zero
            // [g0 g2 g4 g6 | g1 g3 g5 g7] → lane k = group k
            let dots = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(_mm256_hadd_epi32(q0, q1), _mm256_hadd_epi32(q2, q3)), natural)
            let xs = a.scales + (m0 &+ i) &* groups, sums = a.sums + (m0 &+ i) &* groups
            let sx: __m256, sm: __m256
            if count == 8 {
                sx = loadFloats(xs + g0)
                sm = loadFloats(sums + g0)
            } else {
                // Paired groups only (an unpaired one goes to the scalar tail).
                sx = _mm256_maskload_ps(xs + g0, mask)
                sm = _mm256_maskload_ps(sums + g0, mask)
                if count & 1 == 1 {
                    let j = count - 1, g = g0 + j
                    let dj = Float(Float16(bitPattern: Int5Superblock.scaleBits(sb, j)))
                    tails[i] += dj * (Float(int5UnpairedDot(sb, j, a.codes + (m0 + i) * cols + g * 32)) * xs[g] - 16 * sums[g])
                }
            }
            acc = _mm256_fmadd_ps(d, _mm256_fmadd_ps(minusSixteen, sm, _mm256_mul_ps(_mm256_cvtepi32_ps(dots), sx)), acc)
        }
        s &+= 1
        g0 &+= 8
    }
    forEach { acc, i in y[(m0 + i) * w.rows + n] = horizontalSum(acc) + tails[i] }
}

/// M = 8 exactly (as `int8Tile8`): one int5 row × the 8 activation rows, accumulator lanes =
/// activation rows: per pair
/// the codes are unpacked once and multiplied with the rows' codes (`int5PairDots`), two vphaddd
/// levels and two vperm2i128 give group A's and group B's dots for the rows, and per group:
/// f += d · (float(dots) · dx[0..<8] − 16 · (dx·Σqx)[0..<8]) (by-group arrays, zero past M).
/// Sums in another order than `int5Rows`.
@inline(__always)
private func int5Tile(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int, MB: Int,
    prefetchDistance: Int
) {
    let groups = w.cols / 32, cols = w.cols
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let dxs = a.scalesByGroup + (m0 / 8) * groups * 8, xsums = a.sumsByGroup + (m0 / 8) * groups * 8
    let ones = _mm256_set1_epi16(1)
    let sixteen = _mm256_set1_ps(16)
    var fa = _mm256_setzero_ps(), fb = fa
    @inline(__always) func add(_ f: inout __m256, _ dots: __m256i, _ d: Float, _ g: Int) {
        let t = _mm256_fnmadd_ps(sixteen, loadFloats(xsums + g * 8), _mm256_mul_ps(_mm256_cvtepi32_ps(dots), loadFloats(dxs + g * 8)))
        f = _mm256_fmadd_ps(_mm256_set1_ps(d), t, f)
    }
    var s = 0, g0 = 0
    while g0 < groups {
        let count = min(8, groups - g0)
        let sb = row + s * Int5Superblock.bytes
        prefetchSuperblock(sb, prefetchDistance)
        let qh = load256(sb + Int5Superblock.highBitsOffset)
        let d = unsafeBitCast(_mm256_cvtph_ps(load128(sb)), to: SIMD8<Float>.self)
        @inline(__always) func pair(_ p: Int) {
            let (lo, hi) = int5Pair(sb, qh, p)
            let xp = x + (g0 + 2 * p) * 32
            @inline(__always) func q(_ i: Int) -> __m256i { i < MB ? int5PairDots(lo, hi, xp + i * cols, ones) : _mm256_setzero_si256() }
            // low halves: A's dots for rows 0-3 / 4-7, high halves: B's (vinserti128 / vperm2i128)
            let h0123 = unsafeBitCast(
                _mm256_hadd_epi32(_mm256_hadd_epi32(q(0), q(1)), _mm256_hadd_epi32(q(2), q(3))), to: SIMD8<Int32>.self)
            let h4567 = unsafeBitCast(
                _mm256_hadd_epi32(_mm256_hadd_epi32(q(4), q(5)), _mm256_hadd_epi32(q(6), q(7))), to: SIMD8<Int32>.self)
            add(&fa, unsafeBitCast(SIMD8<Int32>(lowHalf: h0123.lowHalf, highHalf: h4567.lowHalf), to: __m256i.self), d[2 * p], g0 + 2 * p)
            add(
                &fb, unsafeBitCast(SIMD8<Int32>(lowHalf: h0123.highHalf, highHalf: h4567.highHalf), to: __m256i.self), d[2 * p + 1],
                g0 + 2 * p + 1)
        }
        if count == 8 {
            pair(0); pair(1); pair(2); pair(3)
        } else {
            for p in 0..<count / 2 { pair(p) }
            if count & 1 == 1 {
                let j = count - 1, g = g0 + j
                var dots = SIMD8<Int32>()
                for i in 0..<MB { dots[i] = int5UnpairedDot(sb, j, a.codes + (m0 + i) * cols + g * 32) }
                add(&fa, unsafeBitCast(dots, to: __m256i.self), d[j], g)
            }
        }
        s += 1
        g0 += 8
    }
    let out = unsafeBitCast(_mm256_add_ps(fa, fb), to: SIMD8<Float>.self)
    for i in 0..<MB { y[(m0 + i) * w.rows + n] = out[i] }
}


/// Decode (M = 1): `int5Rows` for one activation row, not inlined into the row loop.
@inline(never)
private func int5DecodeRow(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ m: Int,
    _ prefetchDistance: Int
) {
    int5Rows(w, a, y, n: n, m0: m, MB: 1, prefetchDistance: prefetchDistance)
}

private let int5Tile8: RowsFunction = { int5Tile($0, $1, $2, n: $3, m0: $4, MB: 8, prefetchDistance: $5) }

private let int5RowFunctions: [RowsFunction] = [
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 1, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 2, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 3, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 4, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 5, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 6, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 7, prefetchDistance: $5) },
    { int5Rows($0, $1, $2, n: $3, m0: $4, MB: 8, prefetchDistance: $5) },
]

func avx2Int5(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "int5 activation blocks must start at a multiple of 8 rows")
    let distance = ms.count == 1 ? QuantKernels.decodePrefetchDistance : QuantKernels.prefetchDistance  // once per call (see avx2Int8)
    if ms.count == 1 {
        for n in rows { int5DecodeRow(w, a, y, n, ms.lowerBound, distance) }
        return
    }
    // Activation tiles outer, rows inner (as avx2Int4).
    var m0 = ms.lowerBound
    while m0 < ms.upperBound {
        let mb = min(8, ms.upperBound - m0)
        let tile = mb == 8 ? int5Tile8 : int5RowFunctions[mb - 1]
        for n in rows { tile(w, a, y, n, m0, distance) }
        m0 += mb
    }
}
#endif
