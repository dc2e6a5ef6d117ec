// AVX2 kernels with explicit intrinsics (compiled only under `#if AVX2`, which Package.swift sets
// when the build machine has avx2 + fma + f16c). Shapes as in QuantizedMatmul.swift: weights
// [N, K], activation codes [M, K] (int8: natural layout; int4: pairedHalves), y [M, N].
//
// Products (per group of 32, weight row r, activation row m):
//   int8: |w| = sign(w, w); x' = sign(x, w); p16 = maddubs(|w|, x')  (u8·s8 pairs → Int16, ≤ 2·128·127)
//         p32 = madd(p16, 1)  → 8 Int32 partial sums, exact
//   int4: one 32-byte load of nibbles covers a PAIR of groups (2p, 2p+1):
//         lo = v & 0xF = [g0 w0..15 | g1 w0..15],  hi = (v >> 4) & 0xF = [g0 w16..31 | g1 w16..31]
//         p16 = maddubs(lo, xlo) + maddubs(hi, xhi)  (≤ 2·2·15·127 = 7620, fits Int16; the
//         pairedHalves activation order makes xlo/xhi plain 32-byte loads)
//         p32 = madd(p16, 1) = [4 lanes of g0 | 4 lanes of g1]
//         plus once per superblock the offset term (−dmin·m[j]) · (dx·Σqx)[j] as an 8-lane FMA.
//   (With AVX-512 VNNI, maddubs + madd become `vpdpbusd`: see `dotBytes`.)
//
// Register blocking, two kinds of tiles (AVX2 has 16 ymm registers):
//   - decode (M = 1): int8 1 × 1 with two accumulators (one sequential stream read DRAM faster
//     than two rows at once); int4 `int4Decode`, 2 rows, scales applied inside vpmaddwd.
//   - M ≤ 7 left over: R × MB tiles (R = 2 rows × MB ≤ 2, or 1 row × MB ≤ 7), one 8-lane float
//     accumulator per (row, activation row): acc += float(p32) · (weight scale · activation scale);
//     each weight block is loaded and prepared once for MB activation rows.
//   - full blocks of 8 activation rows: R = 2 rows × 8, accumulator LANES are activation rows.
//     The 8 per-row Int32 vectors of a group are reduced by a `vphaddd` tree to one vector of 8
//     group dots, so conversion, scale multiply and FMA happen once per (row, group) instead of 8
//     times, and each activation load feeds both weight rows (+35% for int8 over 1 × 8 tiles).
// Threads split output rows; each weight byte is read once per call for up to 48-290 activation
// rows (see `quantizedMatmul`'s M blocking).
//
// Inner loops as compiled (objdump -d --no-show-raw-insn on the release build; Swift 6.3.1,
// -march=native, AMD EPYC Zen 4 without AVX-512 enabled), per step:
//   int8 1×1 (decode, per group; even/odd groups alternate between two accumulators): vmovdqu ×2,
//        vpinsrw + vcvtph2ps, vpsignb ×2, vpmaddubsw, vpmaddwd, vcvtdq2ps, vbroadcastss, vmulps,
//        vfmadd231ps (19 instructions with the loop control)
//   int8 2×8 (per group): per row vpsignb (|w|) and 8 × (vpsignb, vpmaddubsw, vpmaddwd) on 8 shared
//        vmovdqu of x; 6 vphaddd, vinserti128 + vperm2i128 + vpaddd, vcvtdq2ps, vbroadcastss,
//        vmulps, vfmadd231ps
//   int4 decode, 2 rows × 1 (int4Decode, per pair of groups and row; x loads shared by both rows):
//        vmovdqu, vpand, vpsrlw, vpand, vpmaddubsw ×2, vpaddw, vpshufb (six-bit scales), vpmaddwd,
//        vcvtdq2ps, vfmadd231ps — +45% over the 2 × 1 tile with decoded float scales (in cache)
//   int4 1×MB tiles (per pair of groups): vmovdqu, vpsrlw, vpand ×2, vpmaddubsw ×2 (x from
//        memory), vpaddw, vpmaddwd, vpermps (row scales), vmulps, vcvtdq2ps, vfmadd231ps
//   int4 2×8 (per pair of groups and row): 16 vpmaddubsw, 8 vpaddw, 8 vpmaddwd, 6 vphaddd,
//        vinserti128 + vperm2i128, 2 × (vcvtdq2ps, vbroadcastss, vmulps, vfmadd231ps)
// No spills in these loops. An -march=znver4 -D AVX512VNNI object build of this file gave 210
// `vpdpbusd` (that path is compiled blind: no VNNI machine here to run it).
// QuantKernelsTests.testIntrinsicPathIsCompiledIn fails if this file's path is not compiled in
// on an AVX2 machine; re-check the listing above after any change to a hot loop.

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

/// Int32 lanes of Σ u·s over each 4 adjacent bytes (u unsigned, s signed): `vpdpbusd` where the
/// build has AVX-512 VNNI, else `vpmaddubsw` (pairs → Int16; |u·s| pair sums ≤ 2·255·127 would
/// saturate, but our unsigned side is ≤ 128 for int8 (|w|) and ≤ 15 for int4) then `vpmaddwd` by 1.
/// (The VNNI line cannot be compiled on the AVX2-only machines this was written on: `vpdpbusd`
/// through `_mm256_mask_dpbusd_epi32` with a full mask, since `_mm256_dpbusd_epi32` is a C macro
/// Swift does not import.)
@inline(__always)
private func dotBytes(_ u: __m256i, _ s: __m256i, _ ones: __m256i) -> __m256i {
    #if AVX512VNNI
    return _mm256_mask_dpbusd_epi32(_mm256_setzero_si256(), 0xFF, u, s)
    #else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones)
    #endif
}

/// dotBytes(u1, s1) + dotBytes(u2, s2) for int4 nibbles (u ≤ 15): on AVX2 the two Int16 products
/// are added before the widening (2·2·15·127 = 7620 fits Int16), saving one `vpmaddwd`.
@inline(__always)
private func dotBytes(_ u1: __m256i, _ s1: __m256i, _ u2: __m256i, _ s2: __m256i, _ ones: __m256i) -> __m256i {
    #if AVX512VNNI
    return _mm256_mask_dpbusd_epi32(_mm256_mask_dpbusd_epi32(_mm256_setzero_si256(), 0xFF, u1, s1), 0xFF, u2, s2)
    #else
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u1, s1), _mm256_maddubs_epi16(u2, s2)), ones)
    #endif
}

// MARK: - int8

/// One tile over the whole row: R output rows (n, n+1) × MB activation rows (m0 ..< m0+MB), with
/// R·MB ≤ 8 accumulators c0...c7 (index r·MB + i; R = 2 only with MB ≤ 2) that stay in registers.
@inline(__always)
private func int8Tile(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
                      n: Int, m0: Int, R: Int, MB: Int) {
    let groups = w.cols / 32, cols = w.cols
    let row0 = w.rowPointer(n), row1 = w.rowPointer(R > 1 ? n + 1 : n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let xs = a.expandedScales + m0 * groups * 8
    let ones = _mm256_set1_epi16(1)
    var c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0
    for g in 0..<groups {
        let b0 = row0 + g * Int8Block.bytes, b1 = row1 + g * Int8Block.bytes
        let w0 = load256(b0 + Int8Block.quantsOffset), w1 = load256(b1 + Int8Block.quantsOffset)
        let abs0 = _mm256_sign_epi8(w0, w0), abs1 = _mm256_sign_epi8(w1, w1)
        let d0 = _mm256_set1_ps(loadHalf(b0)), d1 = _mm256_set1_ps(loadHalf(b1))
        @inline(__always) func pair(_ acc: inout __m256, _ r: Int, _ i: Int) {
            let xv = load256(x + i * cols + g * 32)
            let dot = r == 0 ? dotBytes(abs0, _mm256_sign_epi8(xv, w0), ones) : dotBytes(abs1, _mm256_sign_epi8(xv, w1), ones)
            let scale = _mm256_mul_ps(r == 0 ? d0 : d1, loadFloats(xs + (i * groups + g) * 8))
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc)
        }
        if R == 1 && MB == 1 {
            // One row, one activation row (decode): even and odd groups into two accumulators, so
            // two FMA chains overlap while the row streams from memory as one sequential stream
            // (two rows at once, 2 × 1, halved the DRAM rate: 5.3 vs 8.9 GB/s per CPU-second).
            if g & 1 == 0 { pair(&c0, 0, 0) } else { pair(&c1, 0, 0) }
        } else if R == 1 {
            pair(&c0, 0, 0)
            if MB > 1 { pair(&c1, 0, 1) }
            if MB > 2 { pair(&c2, 0, 2) }
            if MB > 3 { pair(&c3, 0, 3) }
            if MB > 4 { pair(&c4, 0, 4) }
            if MB > 5 { pair(&c5, 0, 5) }
            if MB > 6 { pair(&c6, 0, 6) }
            if MB > 7 { pair(&c7, 0, 7) }
        } else if MB == 1 {
            pair(&c0, 0, 0)
            pair(&c1, 1, 0)
        } else {
            pair(&c0, 0, 0)
            pair(&c1, 0, 1)
            pair(&c2, 1, 0)
            pair(&c3, 1, 1)
        }
    }
    if R == 1 && MB == 1 { c0 = _mm256_add_ps(c0, c1) }
    storeTile(y, rows: w.rows, n: n, m0: m0, R: R, MB: MB, c0, c1, c2, c3, c4, c5, c6, c7)
}

/// A tile of R rows × exactly 8 activation rows whose accumulator lanes are the 8 activation
/// rows: the 8 per-pair Int32 vectors of a group are reduced with a `vphaddd` tree to one vector
/// of 8 group dots, so the float conversion, the scale multiply and the FMA happen once per
/// (row, group) instead of once per (row, activation row, group). acc_r += float(dots) · dw·[dx_m].
@inline(__always)
private func int8Tile8(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
                       n: Int, m0: Int, R: Int) {
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
        let h0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(p(0), p(1)), _mm256_hadd_epi32(p(2), p(3)))
        let h4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(p(4), p(5)), _mm256_hadd_epi32(p(6), p(7)))
        // h0123 = [m0..m3 over lanes 0-3 of each P | m0..m3 over lanes 4-7], h4567 likewise.
        let a = unsafeBitCast(h0123, to: SIMD8<Int32>.self), b = unsafeBitCast(h4567, to: SIMD8<Int32>.self)
        let sum = SIMD8<Int32>(lowHalf: a.lowHalf, highHalf: b.lowHalf) &+ SIMD8<Int32>(lowHalf: a.highHalf, highHalf: b.highHalf)
        return unsafeBitCast(sum, to: __m256i.self)
    }
    for g in 0..<groups {
        let scales = loadFloats(dx + g * 8)
        let b0 = row0 + g * Int8Block.bytes
        let w0 = load256(b0 + Int8Block.quantsOffset)
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(w0, _mm256_sign_epi8(w0, w0), g)),
                               _mm256_mul_ps(_mm256_set1_ps(loadHalf(b0)), scales), acc0)
        if R > 1 {
            let b1 = row1 + g * Int8Block.bytes
            let w1 = load256(b1 + Int8Block.quantsOffset)
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(w1, _mm256_sign_epi8(w1, w1), g)),
                                   _mm256_mul_ps(_mm256_set1_ps(loadHalf(b1)), scales), acc1)
        }
    }
    for i in 0..<8 {
        y[(m0 + i) * w.rows + n] = acc0[i]
        if R > 1 { y[(m0 + i) * w.rows + n + 1] = acc1[i] }
    }
}

/// Writes accumulator r·MB + i (its 8 lanes summed) to y[m0 + i][n + r].
@inline(__always)
private func storeTile(_ y: UnsafeMutablePointer<Float>, rows: Int, n: Int, m0: Int, R: Int, MB: Int,
                       _ c0: __m256, _ c1: __m256, _ c2: __m256, _ c3: __m256,
                       _ c4: __m256, _ c5: __m256, _ c6: __m256, _ c7: __m256) {
    @inline(__always) func put(_ c: __m256, _ k: Int) {
        if k < R * MB { y[(m0 + k % MB) * rows + n + k / MB] = horizontalSum(c) }
    }
    put(c0, 0); put(c1, 1); put(c2, 2); put(c3, 3); put(c4, 4); put(c5, 5); put(c6, 6); put(c7, 7)
}

// One specialization per tile shape, so each keeps its accumulators in registers.
private typealias Int8TileFunction = @Sendable (QuantizedMatrix, QuantizedActivations, UnsafeMutablePointer<Float>, Int, Int) -> Void
private let int8Tiles: [Int8TileFunction] = [
    { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 1) }, { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 2) },
    { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 3) }, { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 4) },
    { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 5) }, { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 6) },
    { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 7) }, { int8Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 8) },
    { int8Tile($0, $1, $2, n: $3, m0: $4, R: 2, MB: 1) }, { int8Tile($0, $1, $2, n: $3, m0: $4, R: 2, MB: 2) },
    { int8Tile8($0, $1, $2, n: $3, m0: $4, R: 1) }, { int8Tile8($0, $1, $2, n: $3, m0: $4, R: 2) },
]

func avx2Int8(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "int8 activation blocks must start at a multiple of 8 rows")
    var n = rows.lowerBound
    while n < rows.upperBound {
        // Two output rows per step when every tile can take them (M = 2, or full 8-row tiles);
        // M = 1 streams one row at a time (see int8Tile).
        let r = rows.upperBound - n >= 2 && (ms.count == 2 || ms.count >= 8) ? 2 : 1
        var m0 = ms.lowerBound
        while m0 < ms.upperBound {
            let mb = min(8, ms.upperBound - m0)
            if mb == 8 {
                int8Tiles[r == 2 ? 11 : 10](w, a, y, n, m0)
            } else if r == 2 && mb <= 2 {
                int8Tiles[7 + mb](w, a, y, n, m0)
            } else {
                for k in 0..<r { int8Tiles[mb - 1](w, a, y, n + k, m0) }
            }
            m0 += mb
        }
        n += r
    }
}

// MARK: - int4

/// Per-row scales decoded once per row (reused by every activation tile), per superblock s:
///   scales[s, 0..<8]  d·sc[j];   scales[s, 8..<16]  −dmin·m[j] (0 for groups a truncated
///   superblock lacks)
@inline(__always)
private func decodeInt4Scales(_ row: UnsafeRawPointer, groups: Int, into out: UnsafeMutablePointer<Float>) {
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let sb = row + s * Int4Superblock.bytes
        // ggml's Q4_K unpacking of the 12 scale bytes: bytes of u0,u1 are sc[0..<8], of u2,u3 m[0..<8].
        let p = sb + Int4Superblock.scalesOffset
        let k0 = p.loadUnaligned(as: UInt32.self), k1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let k2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        let u3 = ((k2 >> 4) & 0x0F0F_0F0F) | (((k1 >> 6) & 0x0303_0303) << 4)
        let u1 = (k2 & 0x0F0F_0F0F) | (((k0 >> 6) & 0x0303_0303) << 4)
        let u2 = k1 & 0x3F3F_3F3F
        let u0 = k0 & 0x3F3F_3F3F
        let scales8 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(Int64(bitPattern: UInt64(u0) | UInt64(u1) << 32))))
        let mins8 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(Int64(bitPattern: UInt64(u2) | UInt64(u3) << 32))))
        let d = loadHalf(sb + Int4Superblock.dOffset), dmin = loadHalf(sb + Int4Superblock.dminOffset)
        var mn = _mm256_mul_ps(mins8, _mm256_set1_ps(-dmin))
        let count = groups - s * 8
        if count < 8 {
            for j in count..<8 { mn[j] = 0 }
        }
        let dst = UnsafeMutableRawPointer(out + s * 16)
        dst.storeBytes(of: _mm256_mul_ps(scales8, _mm256_set1_ps(d)), as: __m256.self)
        dst.storeBytes(of: mn, toByteOffset: 32, as: __m256.self)
    }
}

/// One tile over the whole row, R output rows × MB activation rows, R·MB ≤ 8 (as int8Tile).
@inline(__always)
private func int4Tile(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int,
                      R: Int, MB: Int, scales0: UnsafePointer<Float>, scales1: UnsafePointer<Float>) {
    let groups = w.cols / 32, cols = w.cols
    let row0 = w.rowPointer(n), row1 = w.rowPointer(R > 1 ? n + 1 : n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let xs = a.expandedScales + m0 * groups * 4
    let sums = a.sums + m0 * groups
    let ones = _mm256_set1_epi16(1)
    let nibbleMask = _mm256_set1_epi8(0x0F)
    // vpermps indices [j ×4, j+1 ×4]: spread scales j, j+1 of a superblock's 8 over the lanes of
    // the pair's partial sums.
    let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)
    var c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0
    // 1 × 1 (an odd last row at M = 1): pairs of groups alternate between c0 and c4 (`second`),
    // two FMA chains instead of one.
    @inline(__always) func forEach(second: Bool = false, _ body: (inout __m256, _ r: Int, _ i: Int) -> Void) {
        if R == 1 && MB == 1 {
            if second { body(&c4, 0, 0) } else { body(&c0, 0, 0) }
        } else if R == 1 {
            body(&c0, 0, 0)
            if MB > 1 { body(&c1, 0, 1) }
            if MB > 2 { body(&c2, 0, 2) }
            if MB > 3 { body(&c3, 0, 3) }
            if MB > 4 { body(&c4, 0, 4) }
            if MB > 5 { body(&c5, 0, 5) }
            if MB > 6 { body(&c6, 0, 6) }
            if MB > 7 { body(&c7, 0, 7) }
        } else if MB == 1 {
            body(&c0, 0, 0)
            body(&c1, 1, 0)
        } else {
            body(&c0, 0, 0)
            body(&c1, 0, 1)
            body(&c2, 1, 0)
            body(&c3, 1, 1)
        }
    }
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let count = min(8, groups - s * 8)
        let nib0 = row0 + s * Int4Superblock.bytes + Int4Superblock.nibblesOffset
        let nib1 = row1 + s * Int4Superblock.bytes + Int4Superblock.nibblesOffset
        let sc0 = loadFloats(scales0 + s * 16), sc1 = loadFloats(scales1 + s * 16)
        var j = 0
        while j + 2 <= count {
            let g = s * 8 + j
            let v0 = load256(nib0 + j * 16), v1 = load256(nib1 + j * 16)
            let lo0 = _mm256_and_si256(v0, nibbleMask), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), nibbleMask)
            let lo1 = _mm256_and_si256(v1, nibbleMask), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), nibbleMask)
            let index = _mm256_add_epi32(spread, _mm256_set1_epi32(Int32(j)))
            let rs0 = _mm256_permutevar8x32_ps(sc0, index), rs1 = _mm256_permutevar8x32_ps(sc1, index)
            forEach(second: j & 2 != 0) { acc, r, i in
                let xp = x + i * cols + g * 32
                let dot = r == 0 ? dotBytes(lo0, load256(xp), hi0, load256(xp + 32), ones)
                                 : dotBytes(lo1, load256(xp), hi1, load256(xp + 32), ones)
                let scale = _mm256_mul_ps(r == 0 ? rs0 : rs1, loadFloats(xs + (i * groups + g) * 4))
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc)
            }
            j += 2
        }
        if j < count {
            // A last unpaired group (G odd; its activation codes are in natural order).
            let g = s * 8 + j
            let mask = _mm_set1_epi8(0x0F)
            let v0 = load128(nib0 + j * 16), v1 = load128(nib1 + j * 16)
            let w0 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v0, 4), mask), _mm_and_si128(v0, mask))
            let w1 = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v1, 4), mask), _mm_and_si128(v1, mask))
            let s0 = sc0[j], s1 = sc1[j]
            forEach { acc, r, i in
                let dot = dotBytes(r == 0 ? w0 : w1, load256(x + i * cols + g * 32), ones)
                let scale = _mm256_set1_ps((r == 0 ? s0 : s1) * xs[(i * groups + g) * 4])
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc)
            }
        }
        // Offset term of the superblock: (−dmin·m[j]) · (dx·Σqx)[j] over its groups, 8 lanes.
        let negMin0 = loadFloats(scales0 + s * 16 + 8), negMin1 = loadFloats(scales1 + s * 16 + 8)
        if count == 8 {
            forEach { acc, r, i in acc = _mm256_fmadd_ps(r == 0 ? negMin0 : negMin1, loadFloats(sums + i * groups + s * 8), acc) }
        } else {
            // Truncated superblock: a masked load reads only its `count` sums (other lanes are 0).
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
            forEach { acc, r, i in
                acc = _mm256_fmadd_ps(r == 0 ? negMin0 : negMin1, _mm256_maskload_ps(sums + i * groups + s * 8, mask), acc)
            }
        }
    }
    if R == 1 && MB == 1 { c0 = _mm256_add_ps(c0, c4) }
    storeTile(y, rows: w.rows, n: n, m0: m0, R: R, MB: MB, c0, c1, c2, c3, c4, c5, c6, c7)
}

/// A tile of R rows × exactly 8 activation rows with activation rows as accumulator lanes (as
/// int8Tile8): per pair of groups the 8 Int32 vectors [g0 ×4 | g1 ×4] reduce with a `vphaddd`
/// tree to one vector of 8 dots per group, then one conversion and FMA per (row, group).
@inline(__always)
private func int4Tile8(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m0: Int,
                       R: Int, scales0: UnsafePointer<Float>, scales1: UnsafePointer<Float>) {
    let groups = w.cols / 32, cols = w.cols
    let row0 = w.rowPointer(n), row1 = w.rowPointer(R > 1 ? n + 1 : n)
    let x = UnsafeRawPointer(a.codes + m0 * cols)
    let dx = a.scalesByGroup + (m0 / 8) * groups * 8, sums = a.sumsByGroup + (m0 / 8) * groups * 8
    let ones = _mm256_set1_epi16(1)
    let nibbleMask = _mm256_set1_epi8(0x0F)
    var acc0 = _mm256_setzero_ps(), acc1 = acc0
    /// The 8 activation rows' dots with one pair of groups (lo/hi nibbles), as (g0 dots, g1 dots).
    @inline(__always) func pairDots(_ lo: __m256i, _ hi: __m256i, _ g: Int) -> (SIMD8<Int32>, SIMD8<Int32>) {
        @inline(__always) func p(_ i: Int) -> __m256i {
            let xp = x + i * cols + g * 32
            return dotBytes(lo, load256(xp), hi, load256(xp + 32), ones)
        }
        let a = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(p(0), p(1)), _mm256_hadd_epi32(p(2), p(3))), to: SIMD8<Int32>.self)
        let b = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(p(4), p(5)), _mm256_hadd_epi32(p(6), p(7))), to: SIMD8<Int32>.self)
        return (SIMD8(lowHalf: a.lowHalf, highHalf: b.lowHalf), SIMD8(lowHalf: a.highHalf, highHalf: b.highHalf))
    }
    /// The 8 activation rows' dots with one group of 32 unpacked codes (natural activation order).
    @inline(__always) func singleDots(_ u: __m256i, _ g: Int) -> SIMD8<Int32> {
        @inline(__always) func p(_ i: Int) -> __m256i { dotBytes(u, load256(x + i * cols + g * 32), ones) }
        let a = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(p(0), p(1)), _mm256_hadd_epi32(p(2), p(3))), to: SIMD8<Int32>.self)
        let b = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(p(4), p(5)), _mm256_hadd_epi32(p(6), p(7))), to: SIMD8<Int32>.self)
        return SIMD8(lowHalf: a.lowHalf, highHalf: b.lowHalf) &+ SIMD8(lowHalf: a.highHalf, highHalf: b.highHalf)
    }
    @inline(__always) func accumulate(_ acc: inout __m256, _ dots: SIMD8<Int32>, _ rowScale: Float, _ g: Int) {
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(unsafeBitCast(dots, to: __m256i.self)),
                              _mm256_mul_ps(_mm256_set1_ps(rowScale), loadFloats(dx + g * 8)), acc)
    }
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let count = min(8, groups - s * 8)
        let nib0 = row0 + s * Int4Superblock.bytes + Int4Superblock.nibblesOffset
        let nib1 = row1 + s * Int4Superblock.bytes + Int4Superblock.nibblesOffset
        let sc0 = scales0 + s * 16, sc1 = scales1 + s * 16
        var j = 0
        while j + 2 <= count {
            let g = s * 8 + j
            let v0 = load256(nib0 + j * 16)
            let (d00, d01) = pairDots(_mm256_and_si256(v0, nibbleMask), _mm256_and_si256(_mm256_srli_epi16(v0, 4), nibbleMask), g)
            accumulate(&acc0, d00, sc0[j], g)
            accumulate(&acc0, d01, sc0[j + 1], g + 1)
            if R > 1 {
                let v1 = load256(nib1 + j * 16)
                let (d10, d11) = pairDots(_mm256_and_si256(v1, nibbleMask), _mm256_and_si256(_mm256_srli_epi16(v1, 4), nibbleMask), g)
                accumulate(&acc1, d10, sc1[j], g)
                accumulate(&acc1, d11, sc1[j + 1], g + 1)
            }
            j += 2
        }
        if j < count {
            let g = s * 8 + j
            let mask = _mm_set1_epi8(0x0F)
            let v0 = load128(nib0 + j * 16)
            accumulate(&acc0, singleDots(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v0, 4), mask), _mm_and_si128(v0, mask)), g), sc0[j], g)
            if R > 1 {
                let v1 = load128(nib1 + j * 16)
                accumulate(&acc1, singleDots(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v1, 4), mask), _mm_and_si128(v1, mask)), g), sc1[j], g)
            }
        }
        // Offset term: (−dmin·m[j]) · (dx·Σqx)[8 activation rows] for each group of the superblock.
        for j in 0..<count {
            let t = loadFloats(sums + (s * 8 + j) * 8)
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(sc0[8 + j]), t, acc0)
            if R > 1 { acc1 = _mm256_fmadd_ps(_mm256_set1_ps(sc1[8 + j]), t, acc1) }
        }
    }
    for i in 0..<8 {
        y[(m0 + i) * w.rows + n] = acc0[i]
        if R > 1 { y[(m0 + i) * w.rows + n + 1] = acc1[i] }
    }
}

/// Decode (M = 1) for R ≤ 2 rows, without the per-row scale decoding pass: the six-bit scale of
/// each group multiplies the Int16 products inside `vpmaddwd` (in place of 1s: ≤ 7620·63·2 fits
/// Int32), so the float side per pair of groups is one FMA by the activation scales into a
/// per-superblock accumulator, which is scaled by d once per superblock:
///   acc += d · Σ_pairs float(madd(p16, [sc_j ×8 | sc_j+1 ×8])) · [dx_j ×4 | dx_j+1 ×4]
///        + (−dmin·m[0..<8]) · (dx·Σqx)[0..<8]
/// The scale vector comes from one `vpshufb` of the superblock's 8 scale bytes per pair.
@inline(__always)
private func int4Decode(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, n: Int, m: Int, R: Int) {
    let groups = w.cols / 32, cols = w.cols
    let row0 = w.rowPointer(n), row1 = w.rowPointer(R > 1 ? n + 1 : n)
    let x = UnsafeRawPointer(a.codes + m * cols)
    let xs = a.expandedScales + m * groups * 4
    let sums = a.sums + m * groups
    let nibbleMask = _mm256_set1_epi8(0x0F)
    // vpshufb control: Int16 lanes of the low 128 bits take scale byte j, of the high 128 bits
    // byte j+1 (0x80: zero the high byte). Adding j to every byte keeps 0x80+j negative (zeroing).
    let spread = _mm256_setr_epi8(0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128,
                                  1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128)
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
    var acc0 = _mm256_setzero_ps(), acc1 = acc0
    /// (scale bytes broadcast to every 8-byte lane, −dmin·m[0..<8] with lanes ≥ count zeroed, d)
    @inline(__always) func header(_ sb: UnsafeRawPointer, _ count: Int) -> (__m256i, __m256, Float) {
        let p = sb + Int4Superblock.scalesOffset
        let k0 = p.loadUnaligned(as: UInt32.self), k1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let k2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        let u3 = ((k2 >> 4) & 0x0F0F_0F0F) | (((k1 >> 6) & 0x0303_0303) << 4)
        let u1 = (k2 & 0x0F0F_0F0F) | (((k0 >> 6) & 0x0303_0303) << 4)
        let scaleBytes = _mm256_set1_epi64x(Int64(bitPattern: UInt64(k0 & 0x3F3F_3F3F) | UInt64(u1) << 32))
        let mins8 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(Int64(bitPattern: UInt64(k1 & 0x3F3F_3F3F) | UInt64(u3) << 32))))
        var negMins = _mm256_mul_ps(mins8, _mm256_set1_ps(-loadHalf(sb + Int4Superblock.dminOffset)))
        if count < 8 {
            negMins = _mm256_and_ps(negMins, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count)), lanes)))
        }
        return (scaleBytes, negMins, loadHalf(sb + Int4Superblock.dOffset))
    }
    @inline(__always) func pairStep(_ acc: inout __m256, _ nib: UnsafeRawPointer, _ scaleBytes: __m256i, _ j: Int, _ g: Int) {
        let v = load256(nib + j * 16)
        let p16 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v, nibbleMask), load256(x + g * 32)),
                                   _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), nibbleMask), load256(x + g * 32 + 32)))
        let sc16 = _mm256_shuffle_epi8(scaleBytes, _mm256_add_epi8(spread, _mm256_set1_epi8(Int8(j))))
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16, sc16)), loadFloats(xs + g * 4), acc)
    }
    @inline(__always) func singleStep(_ acc: inout __m256, _ nib: UnsafeRawPointer, _ scaleBytes: __m256i, _ j: Int, _ g: Int) {
        let mask = _mm_set1_epi8(0x0F)
        let v = load128(nib + j * 16)
        let u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask))
        let sc16 = _mm256_shuffle_epi8(scaleBytes, _mm256_add_epi8(_mm256_set1_epi16(-0x8000), _mm256_set1_epi8(Int8(j))))
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, load256(x + g * 32)), sc16)),
                              _mm256_set1_ps(xs[g * 4]), acc)
    }
    let superblocks = (groups + 7) / 8
    for s in 0..<superblocks {
        let count = min(8, groups - s * 8)
        let sb0 = row0 + s * Int4Superblock.bytes, sb1 = row1 + s * Int4Superblock.bytes
        let (bytes0, negMins0, d0) = header(sb0, count)
        let (bytes1, negMins1, d1) = header(sb1, count)
        var part0 = _mm256_setzero_ps(), part1 = part0
        var j = 0
        while j + 2 <= count {
            pairStep(&part0, sb0 + Int4Superblock.nibblesOffset, bytes0, j, s * 8 + j)
            if R > 1 { pairStep(&part1, sb1 + Int4Superblock.nibblesOffset, bytes1, j, s * 8 + j) }
            j += 2
        }
        if j < count {
            singleStep(&part0, sb0 + Int4Superblock.nibblesOffset, bytes0, j, s * 8 + j)
            if R > 1 { singleStep(&part1, sb1 + Int4Superblock.nibblesOffset, bytes1, j, s * 8 + j) }
        }
        let t = count == 8 ? loadFloats(sums + s * 8)
                           : _mm256_maskload_ps(sums + s * 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(Int32(count)), lanes))
        acc0 = _mm256_fmadd_ps(negMins0, t, _mm256_fmadd_ps(part0, _mm256_set1_ps(d0), acc0))
        if R > 1 { acc1 = _mm256_fmadd_ps(negMins1, t, _mm256_fmadd_ps(part1, _mm256_set1_ps(d1), acc1)) }
    }
    y[m * w.rows + n] = horizontalSum(acc0)
    if R > 1 { y[m * w.rows + n + 1] = horizontalSum(acc1) }
}

@inline(never) private func int4Decode2(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ m: Int) {
    int4Decode(w, a, y, n: n, m: m, R: 2)
}
@inline(never) private func int4Decode1(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ m: Int) {
    int4Decode(w, a, y, n: n, m: m, R: 1)
}

private typealias Int4TileFunction = @Sendable (QuantizedMatrix, QuantizedActivations, UnsafeMutablePointer<Float>, Int, Int,
                                      UnsafePointer<Float>, UnsafePointer<Float>) -> Void
private let int4Tiles: [Int4TileFunction] = [
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 1, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 2, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 3, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 4, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 5, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 6, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 7, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 1, MB: 8, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 2, MB: 1, scales0: $5, scales1: $6) },
    { int4Tile($0, $1, $2, n: $3, m0: $4, R: 2, MB: 2, scales0: $5, scales1: $6) },
    { int4Tile8($0, $1, $2, n: $3, m0: $4, R: 1, scales0: $5, scales1: $6) },
    { int4Tile8($0, $1, $2, n: $3, m0: $4, R: 2, scales0: $5, scales1: $6) },
]

func avx2Int4(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "int4 activation blocks must start at a multiple of 8 rows")
    if ms.count == 1 {
        var n = rows.lowerBound
        while n + 2 <= rows.upperBound {
            int4Decode2(w, a, y, n, ms.lowerBound)
            n += 2
        }
        if n < rows.upperBound { int4Decode1(w, a, y, n, ms.lowerBound) }
        return
    }
    let groups = w.cols / 32, perRow = (groups + 7) / 8 * 16
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * perRow) { buffer in
        let scales0 = buffer.baseAddress!, scales1 = scales0 + perRow
        var n = rows.lowerBound
        while n < rows.upperBound {
            // Two output rows per step when every tile can take them (M ≤ 2, or full 8-row tiles).
            // (Unlike int8, one row at a time with two accumulators measured slower for int4 M = 1:
            // 18 vs 31 GOP/s in cache, 3.9 vs 8.3 GB/s from DRAM per CPU-second.)
            let r = rows.upperBound - n >= 2 && (ms.count <= 2 || ms.count >= 8) ? 2 : 1
            decodeInt4Scales(w.rowPointer(n), groups: groups, into: scales0)
            if r == 2 { decodeInt4Scales(w.rowPointer(n + 1), groups: groups, into: scales1) }
            var m0 = ms.lowerBound
            while m0 < ms.upperBound {
                let mb = min(8, ms.upperBound - m0)
                if mb == 8 {
                    int4Tiles[r == 2 ? 11 : 10](w, a, y, n, m0, scales0, scales1)
                } else if r == 2 && mb <= 2 {
                    int4Tiles[7 + mb](w, a, y, n, m0, scales0, scales1)
                } else {
                    int4Tiles[mb - 1](w, a, y, n, m0, scales0, scales1)
                    if r == 2 { int4Tiles[mb - 1](w, a, y, n + 1, m0, scales1, scales0) }
                }
                m0 += mb
            }
            n += r
        }
    }
}
#endif
