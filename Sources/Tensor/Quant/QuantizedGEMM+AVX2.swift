// The GEMM path for M ≥ `QuantKernels.gemmMinimumRows` activation rows (prefill, batched decode):
// weights [N, K] × activations [M, K] in the `interleavedRows` layout, y [M, N]. Compiled under
// `#if AVX2`; the decode (M = 1) and small-M kernels stay in QuantizedMatmul+AVX2.swift.
//
// Why a second kernel family: the tiles there keep one weight row against 8 activation rows whose
// codes lie row after row, so every product vector holds ONE activation row's partial sums and has
// to be reduced across lanes (`vphaddd` trees) before the per-group float work, and the int5 bits
// are unpacked again per tile. Here the activation codes of 8 rows are interleaved in 4-byte
// pieces (QuantizedActivations.Layout.interleavedRows), so
//     vpmaddubsw(broadcast of 4 weight codes, one 32-byte piece)
// gives 16 Int16 lanes, 2 per activation row: lanes ARE activation rows, no reduction at all.
//
// Per weight row r, group g (32 weights), T = 1, 2 or 4 tiles (8 activation rows each):
//   8 × vpbroadcastd (weight codes k..k+3, shared by the T tiles), per tile 8 × vpmaddubsw (piece
//   from memory), Int16 sums of 4 products (int4/int5 codes ≤ 31: 4·2·31·127 = 31,496 fits Int16),
//   2 × vpmaddwd by 1, vpaddd → the group's dots of the tile's 8 rows; then per tile
//   f += s[r,g] · (float(dot) · dx[g, rows]) − o[r,g] · Σx[g, rows]
//   (w = s·q − o: int5 s = d, o = 16·d; int4 s = d·sc, o = dmin·m; activations' per-group
//   scales and scale·Σcodes come from `scalesByGroup` / `sumsByGroup`).
// int8 weights are signed: the broadcast codes w give |w| = vpsignb(w, w) and each piece is
// vpsignb(x, w) (as the other int8 kernels), and each product is widened at once (|w|·|x| pairs
// reach 2·128·127: two would overflow Int16). Its codes are read straight from the Q8_0 blocks.
//
// int5 and int4 rows are first unpacked, a block of rows at a time, into plain byte codes
// (0...31, weight order) and per-group float s and o (`unpackInt5Row`, `unpackInt4Row`): the bit
// and nibble shuffles are paid once per row per call instead of once per tile, and the inner loop
// is the same for both formats.
// int6 rows unpack into signed codes q − 32 (−32...31), their Int16 sub-block scales and per
// superblock d (`unpackInt6Row`); `int6GEMMTile` multiplies them with the sign trick of int8
// (|w| ≤ 32, so 4 products per half group stay in Int16: 4·2·32·127 = 32,512), applies each
// sub-block's scale with its vpmaddwd (Int32 per superblock, < 2^28), and does the float work once
// per superblock: f += float(Σ_s sc_s·dot_s) · d · dx (int6 activations have one scale per 256).
//
// Loop nest per thread (its chunk of output rows, one M block of `runRows`), `gemmBlocks`:
//   for each block of 16 weight rows: unpack (int5/int4/int6; the first read of those weights,
//     requested during the previous block's tiles and prefetched ahead), then for each group of
//     4 activation tiles (32 rows; 2 or 1 at the end):
//       for each K chunk of 16 groups (the tiles' codes and the block's codes share L1):
//         for each row of the block: the micro-kernel, accumulators kept in `partial` between chunks
//       the block's sums, transposed, written to y a cache line at a time.
//
// With AVX-512 VNNI (`#if AVX512VNNI`) each broadcast × piece is one `vpdpbusd` into Int32 lanes
// (int8 codes made unsigned by a sign-bit flip, the 128·Σx offset taken off in float), and unpacked
// rows go two at a time (`unsignedCodesPair`, `int6VNNITile`: each piece loaded once for both
// rows), each kernel with 8 vpdpbusd chains (`VNNIChains`), and the last pair of tiles of an M
// block (batched decode's 9-16 rows) in 512-bit vectors (`SixteenRows`); elsewhere vpmaddubsw +
// vpmaddwd, one row at a time. docs/kernels.md has the inner loop
// as compiled (objdump) and the measurements against the small-M tiles (which is why
// `gemmMinimumRows` is 9; re-measured with the pairs: at M = 8 the GEMM runs 0.54-0.77x the int4
// and int5 tiles); docs/decisions.md what was tried and dropped.
// QuantKernelsTests.testKernelInstructions checks the products and the broadcasts.

#if AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func load256(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }
@inline(__always) private func loadFloats(_ p: UnsafePointer<Float>) -> __m256 { UnsafeRawPointer(p).loadUnaligned(as: __m256.self) }

#if AVX512VNNI
/// acc + Σ of 4 products u8(u) × s8(s) per Int32 lane (`vpdpbusd`; its unmasked intrinsic is a macro Swift cannot import).
@inline(__always) private func dpbusd(_ acc: __m256i, _ u: __m256i, _ s: __m256i) -> __m256i {
    _mm256_mask_dpbusd_epi32(acc, 0xFF, u, s)
}

/// `vpdpbusd` adds into its accumulator with a latency of 4 cycles and issues 2 per cycle (Zen 4),
/// so a kernel needs 8 independent accumulator chains to keep it busy: with fewer tiles than 4 the
/// kernels give each tile several chains (by k: alternating at 2 tiles, k mod 4 at 1) and merge
/// them here. Integer sums, so the
/// order does not change any result. (2 rows × 2 tiles with one chain each ran at 1 per cycle.)
private enum VNNIChains {
    /// Step k of a kernel: `products(&a, &b, tile)` for each tile, into the slots it uses at this
    /// tile count — slot j takes tile j at 4 tiles, tile j mod 2 at 2 (k alternating), tile 0 at 1
    /// (k mod 4). (a, b: a kernel's two sums per slot, e.g. the group's halves or two weight rows.)
    @inline(__always)
    static func accumulate(
        k: Int, tiles: Int,
        _ a0: inout __m256i, _ a1: inout __m256i, _ a2: inout __m256i, _ a3: inout __m256i,
        _ b0: inout __m256i, _ b1: inout __m256i, _ b2: inout __m256i, _ b3: inout __m256i,
        _ products: (inout __m256i, inout __m256i, Int) -> Void
    ) {
        if tiles > 2 {
            products(&a0, &b0, 0); products(&a1, &b1, 1); products(&a2, &b2, 2); products(&a3, &b3, 3)
        } else if tiles == 2 {
            if k & 1 == 0 { products(&a0, &b0, 0); products(&a1, &b1, 1) } else { products(&a2, &b2, 0); products(&a3, &b3, 1) }
        } else {
            switch k & 3 {
            case 0: products(&a0, &b0, 0)
            case 1: products(&a1, &b1, 0)
            case 2: products(&a2, &b2, 0)
            default: products(&a3, &b3, 0)
            }
        }
    }

    /// Slots 0 ..< tiles hold the tiles' sums after this: at 2 tiles slot j + 2 is added into j, at
    /// 1 tile all four into slot 0.
    @inline(__always)
    static func merge(_ s0: inout __m256i, _ s1: inout __m256i, _ s2: inout __m256i, _ s3: inout __m256i, tiles: Int) {
        if tiles == 2 {
            s0 = _mm256_add_epi32(s0, s2)
            s1 = _mm256_add_epi32(s1, s3)
        } else if tiles == 1 {
            s0 = _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3))
        }
    }
}
#endif

// MARK: - unpacking

/// The natural-order code vectors of pair chunk (A, B) from its low- and high-nibble vectors
/// lo = [A w0..15 | B w0..15], hi = [A w16..31 | B w16..31] (int4's and int5's pair order):
/// stores A's 32 codes then B's.
@inline(__always)
private func storePair(_ lo: __m256i, _ hi: __m256i, _ to: UnsafeMutablePointer<UInt8>) {
    let l = unsafeBitCast(lo, to: SIMD4<UInt64>.self), h = unsafeBitCast(hi, to: SIMD4<UInt64>.self)
    let p = UnsafeMutableRawPointer(to)
    p.storeBytes(of: l.lowHalf, as: SIMD2<UInt64>.self)
    p.storeBytes(of: h.lowHalf, toByteOffset: 16, as: SIMD2<UInt64>.self)
    p.storeBytes(of: l.highHalf, toByteOffset: 32, as: SIMD2<UInt64>.self)
    p.storeBytes(of: h.highHalf, toByteOffset: 48, as: SIMD2<UInt64>.self)
}

/// Superblock `sb` of a row being unpacked: its lines `distance` bytes ahead are requested (the
/// unpacking is the first read of those weights).
@inline(__always)
private func prefetchAhead(_ sb: UnsafeRawPointer, _ distance: Int) {
    prefetchForRead(sb + distance)
    prefetchForRead(sb + (distance + 64))
    prefetchForRead(sb + (distance + 128))
}

/// The per-group s and o of one superblock's `count` (≤ 8) groups, to scale/offset[g0 ..< g0 + count]
/// (lanes past `count` lie past the row and are not stored).
@inline(__always)
private func storeGroupFactors(
    _ s: __m256, _ o: __m256, scale: UnsafeMutablePointer<Float>, offset: UnsafeMutablePointer<Float>,
    g0: Int, count: Int
) {
    if count == 8 {
        UnsafeMutableRawPointer(scale + g0).storeBytes(of: s, as: __m256.self)
        UnsafeMutableRawPointer(offset + g0).storeBytes(of: o, as: __m256.self)
    } else {
        let ss = unsafeBitCast(s, to: SIMD8<Float>.self), os = unsafeBitCast(o, to: SIMD8<Float>.self)
        for j in 0..<count { scale[g0 + j] = ss[j]; offset[g0 + j] = os[j] }
    }
}

/// One int5 row to codes q (0...31), s = d, o = 16·d.
@inline(__always)
private func unpackInt5Row(
    _ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
    scale: UnsafeMutablePointer<Float>, offset: UnsafeMutablePointer<Float>, prefetchDistance: Int
) {
    let groups = cols / 32
    var g0 = 0, s = 0
    while g0 < groups {
        let count = min(8, groups - g0)
        let sb = row + s * Int5Superblock.bytes
        prefetchAhead(sb, prefetchDistance)
        // d past `count` is zero in a truncated superblock.
        let d = _mm256_cvtph_ps(sb.loadUnaligned(as: __m128i.self))
        storeGroupFactors(d, _mm256_mul_ps(d, _mm256_set1_ps(16)), scale: scale, offset: offset, g0: g0, count: count)
        let qh = load256(sb + Int5Superblock.highBitsOffset)
        for p in 0..<count / 2 {
            let (lo, hi) = int5Pair(sb, qh, p)  // the decode kernels' unpacking (QuantizedMatmul+AVX2.swift)
            storePair(lo, hi, codes + (g0 + 2 * p) * 32)
        }
        if count & 1 == 1 {
            let j = count - 1
            for i in 0..<32 { codes[(g0 + j) * 32 + i] = Int5Superblock.code(sb, j, i) }
        }
        g0 += 8
        s += 1
    }
}

/// One int4 row to codes q (0...15), s = d·sc[j], o = dmin·m[j].
@inline(__always)
private func unpackInt4Row(
    _ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
    scale: UnsafeMutablePointer<Float>, offset: UnsafeMutablePointer<Float>, prefetchDistance: Int
) {
    let groups = cols / 32
    let mask = _mm256_set1_epi8(0x0F)
    var g0 = 0, s = 0
    while g0 < groups {
        let count = min(8, groups - g0)
        let sb = row + s * Int4Superblock.bytes
        prefetchAhead(sb, prefetchDistance)
        // Six-bit scales and mins from the header shuffles of the decode kernel.
        let (packed, mins, dd) = int4HeaderVector(sb)
        let sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm256_castsi256_si128(packed))), _mm256_broadcastss_ps(dd))
        let mn = _mm256_mul_ps(mins, _mm256_set1_ps(unsafeBitCast(dd, to: SIMD4<Float>.self)[1]))
        storeGroupFactors(sc, mn, scale: scale, offset: offset, g0: g0, count: count)
        let nib = sb + Int4Superblock.nibblesOffset
        for p in 0..<count / 2 {
            let v = load256(nib + 32 * p)
            storePair(_mm256_and_si256(v, mask), _mm256_and_si256(_mm256_srli_epi16(v, 4), mask), codes + (g0 + 2 * p) * 32)
        }
        if count & 1 == 1 {
            let j = count - 1
            let v = nib.loadUnaligned(fromByteOffset: 16 * j, as: __m128i.self)
            let low = _mm_and_si128(v, _mm_set1_epi8(0x0F)), high = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F))
            UnsafeMutableRawPointer(codes + (g0 + j) * 32).storeBytes(of: low, as: __m128i.self)
            UnsafeMutableRawPointer(codes + (g0 + j) * 32 + 16).storeBytes(of: high, as: __m128i.self)
        }
        g0 += 8
        s += 1
    }
}

/// One int6 row to signed codes q − 32 (weight order), the Int16 scale of each sub-block of 16
/// (row order) and each superblock's d.
@inline(__always)
private func unpackInt6Row(
    _ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
    scales: UnsafeMutablePointer<Int16>, d: UnsafeMutablePointer<Float>, prefetchDistance: Int
) {
    let thirtyTwo = _mm256_set1_epi8(32)
    for b in 0..<cols / 256 {
        let sb = row + b * Int6Superblock.bytes
        prefetchAhead(sb, prefetchDistance)
        prefetchForRead(sb + (prefetchDistance + 192))
        d[b] = Float(Float16(bitPattern: Int6Superblock.dBits(sb)))
        UnsafeMutableRawPointer(scales + 16 * b).storeBytes(of: _mm256_cvtepi8_epi16(int6RowOrderScales(sb)), as: __m256i.self)
        let h0 = load256(sb + Int6Superblock.highBitsOffset), h1 = load256(sb + (Int6Superblock.highBitsOffset + 32))
        for p in 0..<4 {
            let (lo, hi) = int6Pair(sb, h0, h1, p)  // the decode kernels' unpacking (QuantizedMatmul+Int6.swift)
            storePair(_mm256_sub_epi8(lo, thirtyTwo), _mm256_sub_epi8(hi, thirtyTwo), codes + 256 * b + 64 * p)
        }
    }
}

/// The 16 Int8 sub-block scales of int6 superblock `sb` in row order (stored in the order the
/// decode kernels' vector halves use them: `Int6Superblock.scaleSlot`).
@inline(__always)
private func int6RowOrderScales(_ sb: UnsafeRawPointer) -> __m128i {
    let stored = sb.loadUnaligned(fromByteOffset: Int6Superblock.scalesOffset, as: __m128i.self)
    return _mm_shuffle_epi8(stored, _mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15))
}

#if AVX512VNNI
/// One int6 row for the VNNI kernel (`int6VNNITile`): signed codes q − 32 (weight order) as
/// `unpackInt6Row`, each sub-block's scale as Int32 `scales[16b + s]`, and per superblock b its d
/// (`factors[b]`) and the bias of its products with activations made unsigned (x + 128), as Int32
/// bits in `factors[groups + b]`: 128 · Σ_s sc_s · Σ_{i ∈ s} (q_i − 32).
@inline(__always)
private func unpackInt6RowVNNI(
    _ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
    scales: UnsafeMutablePointer<Int32>, factors: UnsafeMutablePointer<Float>, prefetchDistance: Int
) {
    let groups = cols / 32
    let thirtyTwo = _mm256_set1_epi8(32)
    let bias = UnsafeMutableRawPointer(factors + groups).assumingMemoryBound(to: Int32.self)
    for b in 0..<cols / 256 {
        let sb = row + b * Int6Superblock.bytes
        prefetchAhead(sb, prefetchDistance)
        prefetchForRead(sb + (prefetchDistance + 192))
        factors[b] = Float(Float16(bitPattern: Int6Superblock.dBits(sb)))
        let h0 = load256(sb + Int6Superblock.highBitsOffset), h1 = load256(sb + (Int6Superblock.highBitsOffset + 32))
        let out = codes + 256 * b
        let sc = int6RowOrderScales(sb)
        let scales32 = UnsafeMutableRawPointer(scales + 16 * b)
        scales32.storeBytes(of: _mm256_cvtepi8_epi32(sc), as: __m256i.self)
        scales32.storeBytes(of: _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc)), toByteOffset: 32, as: __m256i.self)
        // Each sub-block's Σ q (0...63) by vpsadbw on the codes before they are stored (a 64-bit lane
        // sums 8): pair chunk p holds groups 2p (A) and 2p + 1 (B), sub-blocks 4p ... 4p + 3 = A's
        // halves, then B's; times its scale, less 16·32 per sub-block, summed in 4 Int32 lanes.
        var total = _mm_setzero_si128()
        let evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)
        for p in 0..<4 {
            let (lo, hi) = int6Pair(sb, h0, h1, p)
            storePair(_mm256_sub_epi8(lo, thirtyTwo), _mm256_sub_epi8(hi, thirtyTwo), out + 64 * p)
            let l = _mm256_sad_epu8(lo, _mm256_setzero_si256()), h = _mm256_sad_epu8(hi, _mm256_setzero_si256())
            // [l0 + l1, h0 + h1 | l2 + l3, h2 + h3] = sub-blocks 4p ..< 4p + 4 as Int64, then as Int32.
            let sums64 = _mm256_add_epi64(_mm256_unpacklo_epi64(l, h), _mm256_unpackhi_epi64(l, h))
            let sums = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(sums64, evens))
            let scale4 = scales32.loadUnaligned(fromByteOffset: 16 * p, as: __m128i.self)
            total = _mm_add_epi32(total, _mm_mullo_epi32(_mm_sub_epi32(sums, _mm_set1_epi32(16 * 32)), scale4))
        }
        let t = unsafeBitCast(total, to: SIMD4<Int32>.self)
        bias[b] = 128 &* (t[0] &+ t[1] &+ t[2] &+ t[3])
    }
}
#endif

// MARK: - micro-kernels

/// Where one tile call's accumulators (lane i: activation row 8t + i, i < 8·tiles) start and end
/// up. Between the K chunks of a row they stay in `partial` [32]; after the last chunk lane i goes
/// to `out`[i·stride]: the block's sums transposed to [activation row, weight row], so the driver
/// writes y a cache line at a time (scalar stores straight into y would each touch another line
/// of a 5-10 MB output and stall).
private struct TileAccumulators {
    let partial: UnsafeMutablePointer<Float>
    let out: UnsafeMutablePointer<Float>
    let stride: Int
    let first: Bool
    let last: Bool

    /// The accumulators of the block's row `r` places below this one's.
    @inline(__always)
    func row(_ r: Int) -> TileAccumulators {
        TileAccumulators(partial: partial + r &* 32, out: out + r, stride: stride, first: first, last: last)
    }

    @inline(__always)
    func start(_ i: Int) -> __m256 { first ? _mm256_setzero_ps() : loadFloats(partial + 8 * i) }

    /// The accumulators of `tiles` tiles (those past it unused).
    @inline(__always)
    func start(tiles: Int) -> (__m256, __m256, __m256, __m256) {
        let zero = _mm256_setzero_ps()
        return (start(0), tiles > 1 ? start(1) : zero, tiles > 2 ? start(2) : zero, tiles > 3 ? start(3) : zero)
    }

    @inline(__always)
    func finish(_ f0: __m256, _ f1: __m256, _ f2: __m256, _ f3: __m256, tiles: Int) {
        finish(f0, 0)
        if tiles > 1 { finish(f1, 1) }
        if tiles > 2 { finish(f2, 2) }
        if tiles > 3 { finish(f3, 3) }
    }

    #if AVX512VNNI
    /// Tiles 0 and 1 in one 512-bit vector (their partial sums lie side by side).
    @inline(__always)
    func start16() -> __m512 { first ? _mm512_setzero_ps() : UnsafeRawPointer(partial).loadUnaligned(as: __m512.self) }

    @inline(__always)
    func finish16(_ f: __m512) {
        if last {
            let lanes = unsafeBitCast(f, to: SIMD16<Float>.self)
            for j in 0..<16 { out[j * stride] = lanes[j] }
        } else {
            UnsafeMutableRawPointer(partial).storeBytes(of: f, as: __m512.self)
        }
    }
    #endif

    @inline(__always)
    func finish(_ f: __m256, _ i: Int) {
        if last {
            let lanes = unsafeBitCast(f, to: SIMD8<Float>.self)
            for j in 0..<8 { out[(8 * i + j) * stride] = lanes[j] }
        } else {
            UnsafeMutableRawPointer(partial + 8 * i).storeBytes(of: f, as: __m256.self)
        }
    }
}

/// Per-tile pointers of a tile call: codes, scales and sums of tiles t ..< t + tiles (tiles ≤ 4).
private struct TileInputs {
    let x: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer)
    let dx: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)
    let sx: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)

    @inline(__always)
    init(_ a: QuantizedActivations, t: Int, tiles: Int) {
        let cols = a.cols, groups = cols / 32
        // Tiles past `tiles` alias the last one (never read).
        @inline(__always) func tile(_ i: Int) -> Int { t + min(i, tiles - 1) }
        @inline(__always) func codes(_ i: Int) -> UnsafeRawPointer { UnsafeRawPointer(a.codes + tile(i) * 8 * cols) }
        @inline(__always) func scales(_ i: Int) -> UnsafePointer<Float> { UnsafePointer(a.scalesByGroup + tile(i) * groups * 8) }
        @inline(__always) func sums(_ i: Int) -> UnsafePointer<Float> { UnsafePointer(a.sumsByGroup + tile(i) * groups * 8) }
        x = (codes(0), codes(1), codes(2), codes(3))
        dx = (scales(0), scales(1), scales(2), scales(3))
        sx = (sums(0), sums(1), sums(2), sums(3))
    }

    @inline(__always) func x(_ i: Int) -> UnsafeRawPointer { i == 0 ? x.0 : i == 1 ? x.1 : i == 2 ? x.2 : x.3 }
    @inline(__always) func dx(_ i: Int) -> UnsafePointer<Float> { i == 0 ? dx.0 : i == 1 ? dx.1 : i == 2 ? dx.2 : dx.3 }
    @inline(__always) func sx(_ i: Int) -> UnsafePointer<Float> { i == 0 ? sx.0 : i == 1 ? sx.1 : i == 2 ? sx.2 : sx.3 }
}

/// One unpacked row (codes `c`, per-group s and o) × `tiles` (1, 2 or 4) activation tiles starting
/// at tile `t`, over groups `g0 ..< g1`. Each broadcast of 4 weight codes feeds `tiles` products.
@inline(__always)
private func unsignedCodesTile(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
    _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int, acc: TileAccumulators
) {
    let inputs = TileInputs(a, t: t, tiles: tiles)
    let code = UnsafeRawPointer(c)
    var (f0, f1, f2, f3) = acc.start(tiles: tiles)
    for g in g0..<g1 {
        let cg = code + g &* 32
        #if AVX512VNNI
        // vpdpbusd adds each lane's 4 byte products straight into Int32: no Int16 stage. The
        // group's halves go to d and e, each in the 4 slots of `VNNIChains`: 8 chains.
        var d0 = _mm256_setzero_si256(), d1 = d0, d2 = d0, d3 = d0
        var e0 = d0, e1 = d0, e2 = d0, e3 = d0
        for k in 0..<4 {
            let wa = _mm256_set1_epi32(cg.loadUnaligned(fromByteOffset: 4 * k, as: Int32.self))
            let wb = _mm256_set1_epi32(cg.loadUnaligned(fromByteOffset: 16 + 4 * k, as: Int32.self))
            let pa = g &* 256 &+ 32 * k, pb = pa &+ 128
            @inline(__always) func products(_ d: inout __m256i, _ e: inout __m256i, _ x: UnsafeRawPointer) {
                d = dpbusd(d, wa, load256(x + pa))
                e = dpbusd(e, wb, load256(x + pb))
            }
            VNNIChains.accumulate(k: k, tiles: tiles, &d0, &d1, &d2, &d3, &e0, &e1, &e2, &e3) { products(&$0, &$1, inputs.x($2)) }
        }
        VNNIChains.merge(&d0, &d1, &d2, &d3, tiles: tiles)
        VNNIChains.merge(&e0, &e1, &e2, &e3, tiles: tiles)
        d0 = _mm256_add_epi32(d0, e0)
        if tiles > 1 { d1 = _mm256_add_epi32(d1, e1) }
        if tiles > 2 { d2 = _mm256_add_epi32(d2, e2) }
        if tiles > 3 { d3 = _mm256_add_epi32(d3, e3) }
        #else
        // Per tile, Int16 sums of 4 products per half of the group (≤ 4·2·31·127 = 31,496), then
        // the halves widened and added.
        let ones = _mm256_set1_epi16(1)
        var d0 = _mm256_setzero_si256(), d1 = d0, d2 = d0, d3 = d0
        for h in 0..<2 {
            var p0 = _mm256_setzero_si256(), p1 = p0, p2 = p0, p3 = p0
            for k in 0..<4 {
                let w = _mm256_set1_epi32(cg.loadUnaligned(fromByteOffset: 16 * h + 4 * k, as: Int32.self))
                let piece = g &* 256 &+ (128 * h + 32 * k)
                p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(w, load256(inputs.x.0 + piece)))
                if tiles > 1 { p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(w, load256(inputs.x.1 + piece))) }
                if tiles > 2 { p2 = _mm256_add_epi16(p2, _mm256_maddubs_epi16(w, load256(inputs.x.2 + piece))) }
                if tiles > 3 { p3 = _mm256_add_epi16(p3, _mm256_maddubs_epi16(w, load256(inputs.x.3 + piece))) }
            }
            d0 = _mm256_add_epi32(d0, _mm256_madd_epi16(p0, ones))
            if tiles > 1 { d1 = _mm256_add_epi32(d1, _mm256_madd_epi16(p1, ones)) }
            if tiles > 2 { d2 = _mm256_add_epi32(d2, _mm256_madd_epi16(p2, ones)) }
            if tiles > 3 { d3 = _mm256_add_epi32(d3, _mm256_madd_epi16(p3, ones)) }
        }
        #endif
        let sg = _mm256_set1_ps(s[g]), og = _mm256_set1_ps(o[g])
        @inline(__always) func add(_ f: inout __m256, _ dots: __m256i, _ i: Int) {
            f = _mm256_fmadd_ps(
                sg, _mm256_mul_ps(_mm256_cvtepi32_ps(dots), loadFloats(inputs.dx(i) + g &* 8)),
                _mm256_fnmadd_ps(og, loadFloats(inputs.sx(i) + g &* 8), f))
        }
        add(&f0, d0, 0)
        if tiles > 1 { add(&f1, d1, 1) }
        if tiles > 2 { add(&f2, d2, 2) }
        if tiles > 3 { add(&f3, d3, 3) }
    }
    acc.finish(f0, f1, f2, f3, tiles: tiles)
}

#if AVX512VNNI
/// Two unpacked rows of the block (the second's codes `cols` bytes after the first's, its s and o
/// `groups` floats after) × `tiles` (1, 2 or 4) activation tiles: each piece of activation codes
/// loaded once feeds both rows' products, each tile's scales and sums both rows' float work. The
/// one-row kernel loads 1.5 operands per `vpdpbusd`, this one 0.94 (at 4 tiles), which is what bound
/// it. Its 8 Int32 and 8 float accumulators take AVX-512VL's 32 vector registers. The integer sums
/// are exact and the float work is the one-row kernel's, so each row's result is bitwise what
/// `unsignedCodesTile` gives it. (Four rows × 2 tiles measured no faster than two × 2.)
@inline(__always)
private func unsignedCodesPair(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>, cols: Int, groups: Int,
    _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int, acc: TileAccumulators
) {
    let inputs = TileInputs(a, t: t, tiles: tiles)
    let code0 = UnsafeRawPointer(c), code1 = UnsafeRawPointer(c + cols)
    let acc1 = acc.row(1)
    var (f0, f1, f2, f3) = acc.start(tiles: tiles)
    var (h0, h1, h2, h3) = acc1.start(tiles: tiles)
    for g in g0..<g1 {
        var d0 = _mm256_setzero_si256(), d1 = d0, d2 = d0, d3 = d0
        var e0 = d0, e1 = d0, e2 = d0, e3 = d0
        for k in 0..<8 {
            let w0 = _mm256_set1_epi32(code0.loadUnaligned(fromByteOffset: g &* 32 &+ 4 * k, as: Int32.self))
            let w1 = _mm256_set1_epi32(code1.loadUnaligned(fromByteOffset: g &* 32 &+ 4 * k, as: Int32.self))
            let piece = g &* 256 &+ 32 * k
            @inline(__always) func products(_ d: inout __m256i, _ e: inout __m256i, _ x: UnsafeRawPointer) {
                let p = load256(x + piece)
                d = dpbusd(d, w0, p)
                e = dpbusd(e, w1, p)
            }
            VNNIChains.accumulate(k: k, tiles: tiles, &d0, &d1, &d2, &d3, &e0, &e1, &e2, &e3) { products(&$0, &$1, inputs.x($2)) }
        }
        VNNIChains.merge(&d0, &d1, &d2, &d3, tiles: tiles)
        VNNIChains.merge(&e0, &e1, &e2, &e3, tiles: tiles)
        let s0 = _mm256_set1_ps(s[g]), o0 = _mm256_set1_ps(o[g])
        let s1 = _mm256_set1_ps(s[groups &+ g]), o1 = _mm256_set1_ps(o[groups &+ g])
        @inline(__always) func add(_ f: inout __m256, _ h: inout __m256, _ d: __m256i, _ e: __m256i, _ i: Int) {
            let dx = loadFloats(inputs.dx(i) + g &* 8), sx = loadFloats(inputs.sx(i) + g &* 8)
            f = _mm256_fmadd_ps(s0, _mm256_mul_ps(_mm256_cvtepi32_ps(d), dx), _mm256_fnmadd_ps(o0, sx, f))
            h = _mm256_fmadd_ps(s1, _mm256_mul_ps(_mm256_cvtepi32_ps(e), dx), _mm256_fnmadd_ps(o1, sx, h))
        }
        add(&f0, &h0, d0, e0, 0)
        if tiles > 1 { add(&f1, &h1, d1, e1, 1) }
        if tiles > 2 { add(&f2, &h2, d2, e2, 2) }
        if tiles > 3 { add(&f3, &h3, d3, e3, 3) }
    }
    acc.finish(f0, f1, f2, f3, tiles: tiles)
    acc1.finish(h0, h1, h2, h3, tiles: tiles)
}

/// Two activation tiles (16 rows) laid out for 512-bit vectors: per group g and k, 64 bytes =
/// [tile t's piece k | tile t + 1's piece k], so one load holds four codes of each of the 16 rows;
/// their scales and sums by group as 16 floats per group. Made once per GEMM call (`avx2GEMM`) for
/// the pair of tiles at the end of an M block whose tile count is 2 or 3 mod 4 (batched decode of
/// 9 to 16 rows is exactly that pair).
private struct SixteenRows {
    let codes: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>
    let sums: UnsafeMutablePointer<Float>

    static func byteCount(cols: Int) -> Int { 16 * cols + 2 * 16 * 4 * (cols / 32) }

    init(_ buffer: UnsafeMutableRawPointer, cols: Int) {
        codes = buffer
        scales = (buffer + 16 * cols).assumingMemoryBound(to: Float.self)
        sums = scales + 16 * (cols / 32)
    }

    /// Copies tiles t and t + 1 of `a`; with `flip`, the codes made unsigned (x + 128, as the int6
    /// kernels take them).
    func fill(from a: QuantizedActivations, t: Int, flip: Bool) {
        let cols = a.cols, groups = cols / 32
        let x0 = UnsafeRawPointer(a.codes + t * 8 * cols), x1 = x0 + 8 * cols
        let bits = _mm256_set1_epi8(flip ? -128 : 0)
        for g in 0..<groups {
            for k in 0..<8 {
                let piece = g * 256 + 32 * k, to = codes + (g * 512 + 64 * k)
                to.storeBytes(of: _mm256_xor_si256(load256(x0 + piece), bits), as: __m256i.self)
                to.storeBytes(of: _mm256_xor_si256(load256(x1 + piece), bits), toByteOffset: 32, as: __m256i.self)
            }
        }
        func sideBySide(_ from: UnsafeMutablePointer<Float>, _ to: UnsafeMutablePointer<Float>) {
            let f0 = from + t * groups * 8, f1 = f0 + groups * 8
            for g in 0..<groups {
                UnsafeMutableRawPointer(to + 16 * g).storeBytes(of: loadFloats(f0 + 8 * g), as: __m256.self)
                UnsafeMutableRawPointer(to + 16 * g + 8).storeBytes(of: loadFloats(f1 + 8 * g), as: __m256.self)
            }
        }
        sideBySide(a.scalesByGroup, scales)
        sideBySide(a.sumsByGroup, sums)
    }
}

/// `unsignedCodesPair` at 2 tiles with 512-bit vectors over `SixteenRows`: per k, two broadcasts,
/// one load and two `vpdpbusd` (each 16 lanes = the 16 activation rows) instead of two
/// broadcasts, two loads and four 256-bit ones. The loads and broadcasts, not the products, bound
/// the 256-bit form at M = 16 (`docs/kernels.md`). Zen 4 issues one 512-bit vpdpbusd per cycle at
/// a latency of 4, so each row's sums alternate between two accumulators (4 chains). The integer
/// sums are exact and the float work per lane is the 256-bit kernel's, so every result is bitwise
/// what `unsignedCodesPair` gives.
@inline(never)
private func unsignedCodesPairSixteen(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>, cols: Int, groups: Int,
    _ x: SixteenRows, g0: Int, g1: Int, acc: TileAccumulators
) {
    let code0 = UnsafeRawPointer(c), code1 = UnsafeRawPointer(c + cols)
    let xs = UnsafeRawPointer(x.codes)
    let acc1 = acc.row(1)
    var f = acc.start16(), h = acc1.start16()
    for g in g0..<g1 {
        var d0 = _mm512_setzero_si512(), d1 = d0, e0 = d0, e1 = d0
        for k in 0..<8 {
            let w0 = _mm512_set1_epi32(code0.loadUnaligned(fromByteOffset: g &* 32 &+ 4 * k, as: Int32.self))
            let w1 = _mm512_set1_epi32(code1.loadUnaligned(fromByteOffset: g &* 32 &+ 4 * k, as: Int32.self))
            let p = xs.loadUnaligned(fromByteOffset: g &* 512 &+ 64 * k, as: __m512i.self)
            if k & 1 == 0 {
                d0 = _mm512_mask_dpbusd_epi32(d0, 0xFFFF, w0, p)
                e0 = _mm512_mask_dpbusd_epi32(e0, 0xFFFF, w1, p)
            } else {
                d1 = _mm512_mask_dpbusd_epi32(d1, 0xFFFF, w0, p)
                e1 = _mm512_mask_dpbusd_epi32(e1, 0xFFFF, w1, p)
            }
        }
        let dx = UnsafeRawPointer(x.scales + g &* 16).loadUnaligned(as: __m512.self)
        let sx = UnsafeRawPointer(x.sums + g &* 16).loadUnaligned(as: __m512.self)
        let s0 = _mm512_set1_ps(s[g]), o0 = _mm512_set1_ps(o[g])
        let s1 = _mm512_set1_ps(s[groups &+ g]), o1 = _mm512_set1_ps(o[groups &+ g])
        let d = _mm512_add_epi32(d0, d1), e = _mm512_add_epi32(e0, e1)
        f = _mm512_fmadd_ps(s0, _mm512_mul_ps(_mm512_cvtepi32_ps(d), dx), _mm512_fnmadd_ps(o0, sx, f))
        h = _mm512_fmadd_ps(s1, _mm512_mul_ps(_mm512_cvtepi32_ps(e), dx), _mm512_fnmadd_ps(o1, sx, h))
    }
    acc.finish16(f)
    acc1.finish16(h)
}
#endif

/// One int8 row (its Q8_0 blocks at `row`) × `tiles` (1, 2 or 4) activation tiles starting at
/// tile t, over groups g0 ..< g1.
@inline(__always)
private func int8GEMMTile(
    _ row: UnsafeRawPointer, _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int,
    acc: TileAccumulators, prefetchDistance: Int
) {
    let inputs = TileInputs(a, t: t, tiles: tiles)
    var (f0, f1, f2, f3) = acc.start(tiles: tiles)
    for g in g0..<g1 {
        let block = row + g &* Int8Block.bytes
        if prefetchDistance > 0 { prefetchForRead(block + prefetchDistance) }
        var i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0
        #if AVX512VNNI
        // Codes made unsigned (w + 128, a sign-bit flip shared by the tiles) go straight into
        // vpdpbusd; the offset's 128·Σx comes off in float with the activations' per-group sums.
        var j0 = i0, j1 = i0, j2 = i0, j3 = i0
        let flip = _mm256_set1_epi8(-128)
        for k in 0..<4 {
            let wa = _mm256_xor_si256(
                _mm256_set1_epi32(block.loadUnaligned(fromByteOffset: Int8Block.quantsOffset + 4 * k, as: Int32.self)), flip)
            let wb = _mm256_xor_si256(
                _mm256_set1_epi32(block.loadUnaligned(fromByteOffset: Int8Block.quantsOffset + 16 + 4 * k, as: Int32.self)), flip)
            let pa = g &* 256 &+ 32 * k, pb = pa &+ 128
            @inline(__always) func products(_ i: inout __m256i, _ j: inout __m256i, _ x: UnsafeRawPointer) {
                i = dpbusd(i, wa, load256(x + pa))
                j = dpbusd(j, wb, load256(x + pb))
            }
            VNNIChains.accumulate(k: k, tiles: tiles, &i0, &i1, &i2, &i3, &j0, &j1, &j2, &j3) { products(&$0, &$1, inputs.x($2)) }
        }
        VNNIChains.merge(&i0, &i1, &i2, &i3, tiles: tiles)
        VNNIChains.merge(&j0, &j1, &j2, &j3, tiles: tiles)
        i0 = _mm256_add_epi32(i0, j0)
        if tiles > 1 { i1 = _mm256_add_epi32(i1, j1) }
        if tiles > 2 { i2 = _mm256_add_epi32(i2, j2) }
        if tiles > 3 { i3 = _mm256_add_epi32(i3, j3) }
        let sg = broadcastHalf(block)
        let offset = _mm256_set1_ps(128)
        @inline(__always) func add(_ f: inout __m256, _ dots: __m256i, _ i: Int) {
            let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(dots), loadFloats(inputs.dx(i) + g &* 8))
            let dot = _mm256_fnmadd_ps(offset, loadFloats(inputs.sx(i) + g &* 8), scaled)
            f = _mm256_fmadd_ps(sg, dot, f)
        }
        #else
        let ones = _mm256_set1_epi16(1)
        for k in 0..<8 {
            let w = _mm256_set1_epi32(block.loadUnaligned(fromByteOffset: Int8Block.quantsOffset + 4 * k, as: Int32.self))
            let u = _mm256_sign_epi8(w, w)
            let piece = g &* 256 &+ 32 * k
            @inline(__always) func product(_ x: UnsafeRawPointer) -> __m256i {
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(load256(x + piece), w)), ones)
            }
            i0 = _mm256_add_epi32(i0, product(inputs.x.0))
            if tiles > 1 { i1 = _mm256_add_epi32(i1, product(inputs.x.1)) }
            if tiles > 2 { i2 = _mm256_add_epi32(i2, product(inputs.x.2)) }
            if tiles > 3 { i3 = _mm256_add_epi32(i3, product(inputs.x.3)) }
        }
        let sg = broadcastHalf(block)
        @inline(__always) func add(_ f: inout __m256, _ dots: __m256i, _ i: Int) {
            f = _mm256_fmadd_ps(sg, _mm256_mul_ps(_mm256_cvtepi32_ps(dots), loadFloats(inputs.dx(i) + g &* 8)), f)
        }
        #endif
        add(&f0, i0, 0)
        if tiles > 1 { add(&f1, i1, 1) }
        if tiles > 2 { add(&f2, i2, 2) }
        if tiles > 3 { add(&f3, i3, 3) }
    }
    acc.finish(f0, f1, f2, f3, tiles: tiles)
}

/// One unpacked int6 row (signed codes `c`, sub-block scales `sc`, superblock `d`) × `tiles` (1, 2
/// or 4) activation tiles starting at tile t, over groups g0 ..< g1 (whole superblocks).
@inline(__always)
private func int6GEMMTile(
    _ c: UnsafePointer<UInt8>, _ sc: UnsafePointer<Int16>, _ d: UnsafePointer<Float>,
    _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int, acc: TileAccumulators
) {
    let inputs = TileInputs(a, t: t, tiles: tiles)
    let code = UnsafeRawPointer(c)
    var (f0, f1, f2, f3) = acc.start(tiles: tiles)
    var g = g0
    while g < g1 {
        var i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0
        for j in 0..<8 {
            let gj = g &+ j
            let cg = code + gj &* 32
            for h in 0..<2 {
                var p0 = _mm256_setzero_si256(), p1 = p0, p2 = p0, p3 = p0
                for k in 0..<4 {
                    let w = _mm256_set1_epi32(cg.loadUnaligned(fromByteOffset: 16 * h + 4 * k, as: Int32.self))
                    let u = _mm256_sign_epi8(w, w)
                    let piece = gj &* 256 &+ (128 * h + 32 * k)
                    @inline(__always) func product(_ x: UnsafeRawPointer) -> __m256i {
                        _mm256_maddubs_epi16(u, _mm256_sign_epi8(load256(x + piece), w))
                    }
                    p0 = _mm256_add_epi16(p0, product(inputs.x.0))
                    if tiles > 1 { p1 = _mm256_add_epi16(p1, product(inputs.x.1)) }
                    if tiles > 2 { p2 = _mm256_add_epi16(p2, product(inputs.x.2)) }
                    if tiles > 3 { p3 = _mm256_add_epi16(p3, product(inputs.x.3)) }
                }
                let s = _mm256_set1_epi16(sc[2 &* gj &+ h])
                i0 = _mm256_add_epi32(i0, _mm256_madd_epi16(p0, s))
                if tiles > 1 { i1 = _mm256_add_epi32(i1, _mm256_madd_epi16(p1, s)) }
                if tiles > 2 { i2 = _mm256_add_epi32(i2, _mm256_madd_epi16(p2, s)) }
                if tiles > 3 { i3 = _mm256_add_epi32(i3, _mm256_madd_epi16(p3, s)) }
            }
        }
        let db = _mm256_set1_ps(d[g >> 3])
        @inline(__always) func add(_ f: inout __m256, _ dots: __m256i, _ i: Int) {
            f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), _mm256_mul_ps(db, loadFloats(inputs.dx(i) + g &* 8)), f)
        }
        add(&f0, i0, 0)
        if tiles > 1 { add(&f1, i1, 1) }
        if tiles > 2 { add(&f2, i2, 2) }
        if tiles > 3 { add(&f3, i3, 3) }
        g &+= 8
    }
    acc.finish(f0, f1, f2, f3, tiles: tiles)
}

#if AVX512VNNI
/// R (1 or 2) int6 rows unpacked by `unpackInt6RowVNNI` (row 1's codes `cols` bytes, its scales
/// and factors `2 · groups` elements after row 0's) × `tiles` (1, 2 or 4) activation tiles, over
/// groups g0 ..< g1 (whole superblocks). `vpdpbusd` takes the activations as its unsigned operand
/// (x + 128: a sign-bit flip of each piece, shared by the rows) and the signed codes q − 32 as the
/// signed one; per sub-block of 16 the Int32 sums are scaled by its sc (vpmulld) into the
/// superblock's sums, which start at −128 · Σ_s sc_s · Σ (q − 32) (the flip's bias, from the
/// unpacking); then f += float(sums) · d · dx once per superblock, as `int6GEMMTile` (whose sign
/// trick costs a vpsignb per product and Int16 sums widened by vpmaddwd).
@inline(__always)
private func int6VNNITile(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Int32>, _ factors: UnsafePointer<Float>, cols: Int, groups: Int,
    rows R: Int, _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int, acc: TileAccumulators
) {
    let inputs = TileInputs(a, t: t, tiles: tiles)
    let code0 = UnsafeRawPointer(c), code1 = UnsafeRawPointer(c + cols)
    let scales1 = scales + 2 &* groups, factors1 = factors + 2 &* groups
    let bias0 = UnsafeRawPointer(factors + groups).assumingMemoryBound(to: Int32.self)
    let bias1 = UnsafeRawPointer(factors1 + groups).assumingMemoryBound(to: Int32.self)
    let acc1 = acc.row(1)
    let flip = _mm256_set1_epi8(-128)
    var (f0, f1, f2, f3) = acc.start(tiles: tiles)
    var (h0, h1, h2, h3) = R > 1 ? acc1.start(tiles: tiles) : (f0, f1, f2, f3)
    var g = g0
    while g < g1 {
        let b = g >> 3
        var i0 = _mm256_set1_epi32(0 &- bias0[b]), i1 = i0, i2 = i0, i3 = i0
        var j0 = R > 1 ? _mm256_set1_epi32(0 &- bias1[b]) : i0, j1 = j0, j2 = j0, j3 = j0
        for s in 0..<16 {
            let gs = g &+ (s >> 1)
            var p0 = _mm256_setzero_si256(), p1 = p0, p2 = p0, p3 = p0
            var q0 = p0, q1 = p0, q2 = p0, q3 = p0
            for k in 0..<4 {
                let offset = gs &* 32 &+ (16 * (s & 1) + 4 * k)
                let w0 = _mm256_set1_epi32(code0.loadUnaligned(fromByteOffset: offset, as: Int32.self))
                let w1 = R > 1 ? _mm256_set1_epi32(code1.loadUnaligned(fromByteOffset: offset, as: Int32.self)) : w0
                let piece = gs &* 256 &+ (128 * (s & 1) + 32 * k)
                @inline(__always) func products(_ p: inout __m256i, _ q: inout __m256i, _ x: UnsafeRawPointer) {
                    let u = _mm256_xor_si256(load256(x + piece), flip)
                    p = dpbusd(p, u, w0)
                    if R > 1 { q = dpbusd(q, u, w1) }
                }
                VNNIChains.accumulate(k: k, tiles: tiles, &p0, &p1, &p2, &p3, &q0, &q1, &q2, &q3) { products(&$0, &$1, inputs.x($2)) }
            }
            VNNIChains.merge(&p0, &p1, &p2, &p3, tiles: tiles)
            if R > 1 { VNNIChains.merge(&q0, &q1, &q2, &q3, tiles: tiles) }
            let sc0 = _mm256_set1_epi32(scales[16 &* b &+ s])
            i0 = _mm256_add_epi32(i0, _mm256_mullo_epi32(p0, sc0))
            if tiles > 1 { i1 = _mm256_add_epi32(i1, _mm256_mullo_epi32(p1, sc0)) }
            if tiles > 2 { i2 = _mm256_add_epi32(i2, _mm256_mullo_epi32(p2, sc0)) }
            if tiles > 3 { i3 = _mm256_add_epi32(i3, _mm256_mullo_epi32(p3, sc0)) }
            if R > 1 {
                let sc1 = _mm256_set1_epi32(scales1[16 &* b &+ s])
                j0 = _mm256_add_epi32(j0, _mm256_mullo_epi32(q0, sc1))
                if tiles > 1 { j1 = _mm256_add_epi32(j1, _mm256_mullo_epi32(q1, sc1)) }
                if tiles > 2 { j2 = _mm256_add_epi32(j2, _mm256_mullo_epi32(q2, sc1)) }
                if tiles > 3 { j3 = _mm256_add_epi32(j3, _mm256_mullo_epi32(q3, sc1)) }
            }
        }
        let d0 = _mm256_set1_ps(factors[b]), d1 = R > 1 ? _mm256_set1_ps(factors1[b]) : d0
        @inline(__always) func add(_ f: inout __m256, _ h: inout __m256, _ i: __m256i, _ j: __m256i, _ tile: Int) {
            let dx = loadFloats(inputs.dx(tile) + g &* 8)
            f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(d0, dx), f)
            if R > 1 { h = _mm256_fmadd_ps(_mm256_cvtepi32_ps(j), _mm256_mul_ps(d1, dx), h) }
        }
        add(&f0, &h0, i0, j0, 0)
        if tiles > 1 { add(&f1, &h1, i1, j1, 1) }
        if tiles > 2 { add(&f2, &h2, i2, j2, 2) }
        if tiles > 3 { add(&f3, &h3, i3, j3, 3) }
        g &+= 8
    }
    acc.finish(f0, f1, f2, f3, tiles: tiles)
    if R > 1 { acc1.finish(h0, h1, h2, h3, tiles: tiles) }
}

/// `int6VNNITile` for 2 rows at 2 tiles with 512-bit vectors over `SixteenRows` (its codes already
/// flipped to x + 128): per k two broadcasts, one load and two `vpdpbusd` of 16 lanes (the rows).
/// Each sub-block's sums alternate between two accumulators per row (4 chains of 2), then one
/// vpmulld by its scale per row. Exact integers and the same float work per lane: bitwise
/// `int6VNNITile`'s results.
@inline(never)
private func int6PairSixteen(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Int32>, _ factors: UnsafePointer<Float>, cols: Int, groups: Int,
    _ x: SixteenRows, g0: Int, g1: Int, acc: TileAccumulators
) {
    let code0 = UnsafeRawPointer(c), code1 = UnsafeRawPointer(c + cols)
    let scales1 = scales + 2 &* groups, factors1 = factors + 2 &* groups
    let bias0 = UnsafeRawPointer(factors + groups).assumingMemoryBound(to: Int32.self)
    let bias1 = UnsafeRawPointer(factors1 + groups).assumingMemoryBound(to: Int32.self)
    let xs = UnsafeRawPointer(x.codes)
    let acc1 = acc.row(1)
    var f = acc.start16(), h = acc1.start16()
    var g = g0
    while g < g1 {
        let b = g >> 3
        var i = _mm512_set1_epi32(0 &- bias0[b]), j = _mm512_set1_epi32(0 &- bias1[b])
        for s in 0..<16 {
            let gs = g &+ (s >> 1)
            var p0 = _mm512_setzero_si512(), p1 = p0, q0 = p0, q1 = p0
            for k in 0..<4 {
                let offset = gs &* 32 &+ (16 * (s & 1) + 4 * k)
                let w0 = _mm512_set1_epi32(code0.loadUnaligned(fromByteOffset: offset, as: Int32.self))
                let w1 = _mm512_set1_epi32(code1.loadUnaligned(fromByteOffset: offset, as: Int32.self))
                let u = xs.loadUnaligned(fromByteOffset: gs &* 512 &+ 64 * (4 * (s & 1) + k), as: __m512i.self)
                if k & 1 == 0 {
                    p0 = _mm512_mask_dpbusd_epi32(p0, 0xFFFF, u, w0)
                    q0 = _mm512_mask_dpbusd_epi32(q0, 0xFFFF, u, w1)
                } else {
                    p1 = _mm512_mask_dpbusd_epi32(p1, 0xFFFF, u, w0)
                    q1 = _mm512_mask_dpbusd_epi32(q1, 0xFFFF, u, w1)
                }
            }
            i = _mm512_add_epi32(i, _mm512_mullo_epi32(_mm512_add_epi32(p0, p1), _mm512_set1_epi32(scales[16 &* b &+ s])))
            j = _mm512_add_epi32(j, _mm512_mullo_epi32(_mm512_add_epi32(q0, q1), _mm512_set1_epi32(scales1[16 &* b &+ s])))
        }
        let dx = UnsafeRawPointer(x.scales + g &* 16).loadUnaligned(as: __m512.self)
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(_mm512_set1_ps(factors[b]), dx), f)
        h = _mm512_fmadd_ps(_mm512_cvtepi32_ps(j), _mm512_mul_ps(_mm512_set1_ps(factors1[b]), dx), h)
        g &+= 8
    }
    acc.finish16(f)
    acc1.finish16(h)
}

@inline(never)
private func int6VNNIRows1Tiles1(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 1, a, t: t,
        tiles: 1, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6VNNIRows1Tiles2(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 1, a, t: t,
        tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6VNNIRows1Tiles4(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 1, a, t: t,
        tiles: 4, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6VNNIRows2Tiles1(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 2, a, t: t,
        tiles: 1, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6VNNIRows2Tiles2(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 2, a, t: t,
        tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6VNNIRows2Tiles4(
    _ c: UnsafePointer<UInt8>, _ scales: UnsafePointer<Float>, _ factors: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6VNNITile(
        c, UnsafeRawPointer(scales).assumingMemoryBound(to: Int32.self), factors, cols: cols, groups: groups, rows: 2, a, t: t,
        tiles: 4, g0: g0, g1: g1, acc: acc)
}

#endif

// One specialization per tile count, so the accumulators stay in registers.
private typealias UnsignedTileFunction = (
    UnsafePointer<UInt8>, UnsafePointer<Float>, UnsafePointer<Float>, QuantizedActivations,
    Int, Int, Int, TileAccumulators
) -> Void
private typealias Int8TileFunction = (UnsafeRawPointer, QuantizedActivations, Int, Int, Int, TileAccumulators, Int) -> Void
private typealias Int6TileFunction = (
    UnsafePointer<UInt8>, UnsafePointer<Int16>, UnsafePointer<Float>, QuantizedActivations, Int, Int, Int, TileAccumulators
) -> Void

@inline(never)
private func int6GEMMTiles1(
    _ c: UnsafePointer<UInt8>, _ sc: UnsafePointer<Int16>, _ d: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6GEMMTile(c, sc, d, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6GEMMTiles2(
    _ c: UnsafePointer<UInt8>, _ sc: UnsafePointer<Int16>, _ d: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6GEMMTile(c, sc, d, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int6GEMMTiles4(
    _ c: UnsafePointer<UInt8>, _ sc: UnsafePointer<Int16>, _ d: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    int6GEMMTile(c, sc, d, a, t: t, tiles: 4, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesTiles1(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesTile(c, s, o, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesTiles2(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesTile(c, s, o, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesTiles4(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesTile(c, s, o, a, t: t, tiles: 4, g0: g0, g1: g1, acc: acc)
}

#if AVX512VNNI
private typealias UnpackedRowsFunction = (
    UnsafePointer<UInt8>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int, QuantizedActivations, Int, Int, Int,
    TileAccumulators
) -> Void

@inline(never)
private func unsignedCodesPairTiles4(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesPair(c, s, o, cols: cols, groups: groups, a, t: t, tiles: 4, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesPairTiles2(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesPair(c, s, o, cols: cols, groups: groups, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesPairTiles1(
    _ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>, _ cols: Int, _ groups: Int,
    _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int, _ acc: TileAccumulators
) {
    unsignedCodesPair(c, s, o, cols: cols, groups: groups, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc)
}
#endif

@inline(never)
private func int8GEMMTiles1(
    _ row: UnsafeRawPointer, _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int,
    _ acc: TileAccumulators, _ prefetchDistance: Int
) {
    int8GEMMTile(row, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc, prefetchDistance: prefetchDistance)
}

@inline(never)
private func int8GEMMTiles2(
    _ row: UnsafeRawPointer, _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int,
    _ acc: TileAccumulators, _ prefetchDistance: Int
) {
    int8GEMMTile(row, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc, prefetchDistance: prefetchDistance)
}

@inline(never)
private func int8GEMMTiles4(
    _ row: UnsafeRawPointer, _ a: QuantizedActivations, _ t: Int, _ g0: Int, _ g1: Int,
    _ acc: TileAccumulators, _ prefetchDistance: Int
) {
    int8GEMMTile(row, a, t: t, tiles: 4, g0: g0, g1: g1, acc: acc, prefetchDistance: prefetchDistance)
}

// MARK: - driver

/// Weight rows per block: unpacked once, then multiplied with every activation tile of the M block.
private let gemmRowsPerBlock = 16

/// Groups per K chunk: four tiles' chunk of activation codes (32 × 512 bytes) and the block's chunk
/// of weight codes (16 × 512) share the 32 KB L1. A multiple of 8: the int6 tiles take whole superblocks. Without chunks the tiles' codes at K = 4,864
/// (78 KB per pair of tiles) would come from L2 for every weight row.
private let gemmGroupsPerChunk = 16

/// to[0..<count] = from[0..<count] (count ≤ 16): two vector moves for a full block.
@inline(__always)
private func copyRow(_ from: UnsafePointer<Float>, to: UnsafeMutablePointer<Float>, count: Int) {
    if count == 16 {
        UnsafeMutableRawPointer(to).storeBytes(of: loadFloats(from), as: __m256.self)
        UnsafeMutableRawPointer(to + 8).storeBytes(of: loadFloats(from + 8), as: __m256.self)
    } else {
        for j in 0..<count { to[j] = from[j] }
    }
}

/// Floats per unpacked row in each of the two factor arrays (s and o; int6: its sub-block scales and
/// its d, and on VNNI builds also its superblocks' biases): 1 per group, int6 on VNNI builds 2.
@inline(__always)
private func factorStride(_ w: QuantizedMatrix) -> Int {
    #if AVX512VNNI
    if w.format == .int6 { return 2 * (w.cols / 32) }
    #endif
    return w.cols / 32
}

/// y[ms, rows] for `interleavedRows` activations (ms starts at a multiple of 8).
func avx2GEMM(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "GEMM activation blocks must start at a multiple of 8 rows")
    let cols = w.cols, block = gemmRowsPerBlock
    // Scratch: unpacked codes [block, K], s and o [block, G] (int6: its Int16 sub-block scales in
    // s, its superblocks' d in o), partial sums [block, 32], the block's finished sums transposed
    // [32, block].
    let unpacked = w.format != .int8 ? block * (cols + 8 * factorStride(w)) : 0
    // The 512-bit copy of a last pair of tiles (`SixteenRows`), for the unpacked formats' pairs.
    var sixteen = 0
    #if AVX512VNNI
    if w.format != .int8, sixteenRowsTile(ms) != nil { sixteen = SixteenRows.byteCount(cols: cols) }
    #endif
    let bytes = unpacked + sixteen + 2 * block * 32 * 4
    withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 64) { buffer in
        gemmBlocks(w, a, y, rows: rows, ms: ms, scratch: buffer.baseAddress!, bytes: bytes, sixteen: sixteen > 0 ? unpacked : nil)
    }
}

/// The first tile of the pair of tiles `gemmBlocks` multiplies as 2 (the M block's tiles go 4 at
/// a time, then 2, then 1), if there is one.
private func sixteenRowsTile(_ ms: Range<Int>) -> Int? {
    let first = ms.lowerBound / 8, count = (ms.upperBound + 7) / 8 - first
    return count % 4 >= 2 ? first + count / 4 * 4 : nil
}

/// The loop nest of `avx2GEMM` over its scratch.
private func gemmBlocks(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>,
    scratch base: UnsafeMutableRawPointer, bytes: Int, sixteen sixteenOffset: Int?
) {
    let distance = QuantKernels.prefetchDistance
    #if AVX512VNNI
    let sixteenTile = sixteenOffset != nil ? sixteenRowsTile(ms) : nil
    let sixteen = SixteenRows(base + (sixteenOffset ?? 0), cols: w.cols)
    if let t = sixteenTile { sixteen.fill(from: a, t: t, flip: w.format == .int6) }
    #endif
    let cols = w.cols, groups = cols / 32, block = gemmRowsPerBlock
    let firstTile = ms.lowerBound / 8, tileEnd = (ms.upperBound + 7) / 8
    let unpacks = w.format != .int8
    let partial = (base + (bytes - 2 * block * 32 * 4)).assumingMemoryBound(to: Float.self)
    let transposed = partial + block * 32
    let codes = base.assumingMemoryBound(to: UInt8.self)
    let stride = factorStride(w)
    let scale = (base + block * cols).assumingMemoryBound(to: Float.self)
    let offset = (base + block * (cols + 4 * stride)).assumingMemoryBound(to: Float.self)
    let chunks = (groups + gemmGroupsPerChunk - 1) / gemmGroupsPerChunk
    var r0 = rows.lowerBound
    while r0 < rows.upperBound {
        let r1 = min(rows.upperBound, r0 + block)
        // While the tiles multiply this block, the next block's weights are requested, a slice per
        // row and K chunk of the first tile pass: unpacking then finds them in cache instead of
        // stalling on memory with the vector units idle.
        let next = w.rowPointer(r1)
        let nextLines = unpacks ? (min(rows.upperBound, r1 + block) - r1) * w.bytesPerRow / 64 : 0
        let linesPerRow = (nextLines + chunks * (r1 - r0) - 1) / (chunks * (r1 - r0))
        var nextLine = 0
        @inline(__always) func prefetchNextBlock(rows: Int) {
            let end = min(nextLines, nextLine &+ rows &* linesPerRow)
            while nextLine < end {
                prefetchForRead(next + nextLine &* 64)
                nextLine &+= 1
            }
        }
        if unpacks {
            for n in r0..<r1 {
                let i = n - r0
                if w.format == .int5 {
                    unpackInt5Row(
                        w.rowPointer(n), cols: cols, codes: codes + i * cols, scale: scale + i * stride,
                        offset: offset + i * stride, prefetchDistance: distance)
                } else if w.format == .int6 {
                    #if AVX512VNNI
                    unpackInt6RowVNNI(
                        w.rowPointer(n), cols: cols, codes: codes + i * cols,
                        scales: UnsafeMutableRawPointer(scale + i * stride).assumingMemoryBound(to: Int32.self),
                        factors: offset + i * stride, prefetchDistance: distance)
                    #else
                    unpackInt6Row(
                        w.rowPointer(n), cols: cols, codes: codes + i * cols,
                        scales: UnsafeMutableRawPointer(scale + i * stride).assumingMemoryBound(to: Int16.self),
                        d: offset + i * stride, prefetchDistance: distance)
                    #endif
                } else {
                    unpackInt4Row(
                        w.rowPointer(n), cols: cols, codes: codes + i * cols, scale: scale + i * stride,
                        offset: offset + i * stride, prefetchDistance: distance)
                }
            }
        }
        var t = firstTile
        while t < tileEnd {
            let tiles = tileEnd - t >= 4 ? 4 : tileEnd - t >= 2 ? 2 : 1
            let unsignedTile: UnsignedTileFunction
            let int8Tile: Int8TileFunction
            let int6Tile: Int6TileFunction
            switch tiles {
            case 4: unsignedTile = unsignedCodesTiles4; int8Tile = int8GEMMTiles4; int6Tile = int6GEMMTiles4
            case 2: unsignedTile = unsignedCodesTiles2; int8Tile = int8GEMMTiles2; int6Tile = int6GEMMTiles2
            default: unsignedTile = unsignedCodesTiles1; int8Tile = int8GEMMTiles1; int6Tile = int6GEMMTiles1
            }
            #if AVX512VNNI
            let pair: UnpackedRowsFunction, int6Pair: UnpackedRowsFunction, int6Single: UnpackedRowsFunction
            switch tiles {
            case 4: pair = unsignedCodesPairTiles4; int6Pair = int6VNNIRows2Tiles4; int6Single = int6VNNIRows1Tiles4
            case 2: pair = unsignedCodesPairTiles2; int6Pair = int6VNNIRows2Tiles2; int6Single = int6VNNIRows1Tiles2
            default: pair = unsignedCodesPairTiles1; int6Pair = int6VNNIRows2Tiles1; int6Single = int6VNNIRows1Tiles1
            }
            #endif
            var g0 = 0
            while g0 < groups {
                let g1 = min(groups, g0 + gemmGroupsPerChunk)
                @inline(__always) func accumulators(_ i: Int) -> TileAccumulators {
                    TileAccumulators(partial: partial + i * 32, out: transposed + i, stride: block, first: g0 == 0, last: g1 == groups)
                }
                #if AVX512VNNI
                // Unpacked rows two at a time, an odd last one alone.
                var n = r0
                if unpacks {
                    @inline(__always) func run(_ kernel: UnpackedRowsFunction, rows: Int) {
                        let i = n - r0
                        prefetchNextBlock(rows: rows)
                        kernel(
                            UnsafePointer(codes + i * cols), UnsafePointer(scale + i * stride), UnsafePointer(offset + i * stride),
                            cols, groups, a, t, g0, g1, accumulators(i))
                        n += rows
                    }
                    if w.format == .int6 && t == sixteenTile {
                        while n + 2 <= r1 {
                            let i = n - r0
                            prefetchNextBlock(rows: 2)
                            int6PairSixteen(
                                UnsafePointer(codes + i * cols),
                                UnsafeRawPointer(scale + i * stride).assumingMemoryBound(to: Int32.self),
                                UnsafePointer(offset + i * stride), cols: cols, groups: groups, sixteen, g0: g0, g1: g1,
                                acc: accumulators(i))
                            n += 2
                        }
                        if n < r1 { run(int6Single, rows: 1) }
                    } else if w.format == .int6 {
                        while n + 2 <= r1 { run(int6Pair, rows: 2) }
                        if n < r1 { run(int6Single, rows: 1) }
                    } else if t == sixteenTile {
                        while n + 2 <= r1 {
                            let i = n - r0
                            prefetchNextBlock(rows: 2)
                            unsignedCodesPairSixteen(
                                UnsafePointer(codes + i * cols), UnsafePointer(scale + i * stride), UnsafePointer(offset + i * stride),
                                cols: cols, groups: groups, sixteen, g0: g0, g1: g1, acc: accumulators(i))
                            n += 2
                        }
                    } else {
                        while n + 2 <= r1 { run(pair, rows: 2) }
                    }
                }
                let single = n
                #else
                let single = r0
                #endif
                for n in single..<r1 {
                    let i = n - r0
                    let acc = accumulators(i)
                    prefetchNextBlock(rows: 1)
                    if w.format == .int6 {
                        int6Tile(
                            UnsafePointer(codes + i * cols),
                            UnsafeRawPointer(scale + i * stride).assumingMemoryBound(to: Int16.self),
                            UnsafePointer(offset + i * stride), a, t, g0, g1, acc)
                    } else if unpacks {
                        unsignedTile(
                            UnsafePointer(codes + i * cols), UnsafePointer(scale + i * stride), UnsafePointer(offset + i * stride), a, t,
                            g0, g1, acc)
                    } else {
                        // int8 reads its blocks in place: the first tiles stream them from memory and prefetch.
                        int8Tile(w.rowPointer(n), a, t, g0, g1, acc, t == firstTile ? distance : 0)
                    }
                }
                g0 = g1
            }
            // Row i of `transposed` is y[8t + i][r0 ..< r1]; rows at or past ms.upperBound are padding.
            let m0 = t * 8, live = min(8 * tiles, ms.upperBound - m0)
            for i in 0..<live {
                copyRow(transposed + i * block, to: y + (m0 + i) * w.rows + r0, count: r1 - r0)
            }
            t += tiles
        }
        r0 = r1
    }
}
#endif
