// The GEMM path for M ≥ `QuantKernels.gemmMinimumRows` activation rows (prefill, batched decode):
// weights [N, K] × activations [M, K] in the `interleavedRows` layout, y [M, N]. Compiled under
// `#if AVX2`; the decode (M = 1) and small-M kernels stay in QuantizedMatmul+AVX2.swift.
//
// Why a second kernel family: the tiles there keep one weight row against 8 activation rows whose
// codes lie row after row, so every product vector holds ONE activation row's partial sums and has
// to be reduced across lanes (`vphaddd` trees) before the per-group float work; unpacking the int5
// bits was repeated per tile too. Measured in cache they ran at ~0.3 of this machine's
// `vpmaddubsw` + `vpmaddwd` rate. Here the activation codes of 8 rows are interleaved in 4-byte
// pieces (QuantizedActivations.Layout.interleavedRows), so
//     vpmaddubsw(broadcast of 4 weight codes, one 32-byte piece)
// gives 16 Int16 lanes, 2 per activation row: lanes ARE activation rows, no reduction at all.
//
// Per weight row r, group g (32 weights), tile pair (16 activation rows):
//   8 × vpbroadcastd (weight codes k..k+3), 16 × vpmaddubsw (piece from memory), Int16 sums of
//   4 products (int4/int5 codes ≤ 31: 4·2·31·127 = 31,496 fits Int16), 4 × vpmaddwd by 1,
//   2 × vpaddd → the group's dots of 16 rows in two Int32 vectors; then per 8 rows
//   acc += s[r,g] · (float(dot) · dx[g, rows]) and min += o[r,g] · Σx[g, rows]
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
//
// Loop nest per thread (its chunk of output rows, one M block of `runRows`):
//   for each block of `rowsPerBlock` rows (≈16 KB of unpacked codes: L1 with one tile pair)
//     unpack (int5/int4) — the first read of those weights, prefetched ahead
//     for each pair of activation tiles (16 rows; a last odd tile alone): for each row of the block
// Measured in cache (one core, K = 896, same process): 0.57-0.63 of a register-only
// vpmaddubsw/vpmaddwd loop (~225 GOP/s per core here), 1.9x the int5 tiles, 1.8x the int8 tiles.
// Against the small-M tiles, one thread, alternating in one process (quantization included):
//   int5 4864x896 M=512 1.45-1.51x, 896x4864 M=512 1.35x, M=16 1.31-1.49x
//   int4 1.39-1.53x, 1.41x, 1.11-1.26x;  int8 1.26-1.31x, 1.11-1.31x, 1.23-1.50x
//   M = 8: int8 1.06-1.17x, int5 0.96x, int4 0.77-0.88x (one tile: its broadcasts serve 8 rows,
//   not 16), hence `gemmMinimumRows` = 9.
// End to end (default model, 2 threads, alternating): prefill 512 1.32x, 2,048 1.29x, 16 streams
// decoding together 1.33x.
//
// Inner loop as compiled (objdump, per group and tile pair): 8 vpbroadcastd, 16 vpmaddubsw with
// the piece from memory, 12 vpaddw, 4 vpmaddwd, 2 vpaddd, 2 vcvtdq2ps, 2 vmulps, 4 FMAs, 2
// vbroadcastss; no spills. QuantKernelsTests.testKernelInstructions checks the products.

#if AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func load256(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }
@inline(__always) private func loadFloats(_ p: UnsafePointer<Float>) -> __m256 { UnsafeRawPointer(p).loadUnaligned(as: __m256.self) }


/// Unpacked weight rows: codes [rows, K] bytes, scale and offset [rows, G] floats.
private struct UnpackedRows {
    let codes: UnsafeMutablePointer<UInt8>
    let scale: UnsafeMutablePointer<Float>
    let offset: UnsafeMutablePointer<Float>
}

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

/// One int5 row to codes q (0...31), s = d, o = 16·d.
@inline(__always)
private func unpackInt5Row(_ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
                           scale: UnsafeMutablePointer<Float>, offset: UnsafeMutablePointer<Float>, prefetchDistance: Int) {
    let groups = cols / 32
    let mask = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10)
    var g0 = 0, s = 0
    while g0 < groups {
        let count = min(8, groups - g0)
        let sb = row + s * Int5Superblock.bytes
        prefetchForRead(sb + prefetchDistance)
        prefetchForRead(sb + (prefetchDistance + 64))
        prefetchForRead(sb + (prefetchDistance + 128))
        let d = _mm256_cvtph_ps(sb.loadUnaligned(as: __m128i.self))
        // d past `count` is zero in a truncated superblock; the lanes past the row are not stored.
        if count == 8 {
            UnsafeMutableRawPointer(scale + g0).storeBytes(of: d, as: __m256.self)
            UnsafeMutableRawPointer(offset + g0).storeBytes(of: _mm256_mul_ps(d, _mm256_set1_ps(16)), as: __m256.self)
        } else {
            let ds = unsafeBitCast(d, to: SIMD8<Float>.self)
            for j in 0..<count { scale[g0 + j] = ds[j]; offset[g0 + j] = 16 * ds[j] }
        }
        let qh = load256(sb + Int5Superblock.highBitsOffset)
        // Fifth bits of code vector v: bit v of each qh byte, moved to bit 4 (see int5FifthBits).
        @inline(__always) func fifth(_ v: Int) -> __m256i {
            v < 4 ? _mm256_and_si256(_mm256_sll_epi16(qh, _mm_cvtsi32_si128(Int32(4 - v))), bit4)
                  : _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(Int32(v - 4))), bit4)
        }
        for p in 0..<count / 2 {
            let v = load256(sb + Int5Superblock.nibblesOffset + 32 * p)
            let lo = _mm256_or_si256(_mm256_and_si256(v, mask), fifth(2 * p))
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), fifth(2 * p + 1))
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
private func unpackInt4Row(_ row: UnsafeRawPointer, cols: Int, codes: UnsafeMutablePointer<UInt8>,
                           scale: UnsafeMutablePointer<Float>, offset: UnsafeMutablePointer<Float>, prefetchDistance: Int) {
    let groups = cols / 32
    let mask = _mm256_set1_epi8(0x0F)
    var g0 = 0, s = 0
    while g0 < groups {
        let count = min(8, groups - g0)
        let sb = row + s * Int4Superblock.bytes
        prefetchForRead(sb + prefetchDistance)
        prefetchForRead(sb + (prefetchDistance + 64))
        prefetchForRead(sb + (prefetchDistance + 128))
        // Six-bit scales and mins from the header shuffles of the decode kernel.
        let (packed, mins, dd) = int4HeaderVector(sb)
        let sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm256_castsi256_si128(packed))), _mm256_broadcastss_ps(dd))
        let mn = _mm256_mul_ps(mins, _mm256_set1_ps(unsafeBitCast(dd, to: SIMD4<Float>.self)[1]))
        if count == 8 {
            UnsafeMutableRawPointer(scale + g0).storeBytes(of: sc, as: __m256.self)
            UnsafeMutableRawPointer(offset + g0).storeBytes(of: mn, as: __m256.self)
        } else {
            let scs = unsafeBitCast(sc, to: SIMD8<Float>.self), mns = unsafeBitCast(mn, to: SIMD8<Float>.self)
            for j in 0..<count { scale[g0 + j] = scs[j]; offset[g0 + j] = mns[j] }
        }
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

// MARK: - micro-kernels

/// One unpacked row (codes `c`, per-group s and o) × `tiles` (1 or 2) activation tiles starting
/// at tile `t`, over groups `g0 ..< g1`: adds to acc[0..<8] (tile t's rows) and acc[8..<16].
@inline(__always)
private func unsignedCodesTile(_ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
                               _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int, acc: UnsafeMutablePointer<Float>) {
    let cols = a.cols, groups = cols / 32
    let x0 = UnsafeRawPointer(a.codes + t * 8 * cols), x1 = UnsafeRawPointer(a.codes + (t + tiles - 1) * 8 * cols)
    let dx0 = a.scalesByGroup + t * groups * 8, dx1 = a.scalesByGroup + (t + tiles - 1) * groups * 8
    let sx0 = a.sumsByGroup + t * groups * 8, sx1 = a.sumsByGroup + (t + tiles - 1) * groups * 8
    let ones = _mm256_set1_epi16(1)
    let code = UnsafeRawPointer(c)
    var f0 = loadFloats(acc), f1 = tiles == 2 ? loadFloats(acc + 8) : _mm256_setzero_ps()
    for g in g0..<g1 {
        let cg = code + g &* 32, xa = x0 + g &* 256, xb = x1 + g &* 256
        // Int16 sums of 4 products per half of the group (≤ 4·2·31·127 = 31,496).
        @inline(__always) func half(_ h: Int) -> (__m256i, __m256i) {
            var pa = _mm256_setzero_si256(), pb = pa
            for k in 0..<4 {
                let w = _mm256_set1_epi32(cg.loadUnaligned(fromByteOffset: 16 * h + 4 * k, as: Int32.self))
                pa = _mm256_add_epi16(pa, _mm256_maddubs_epi16(w, load256(xa + (128 * h + 32 * k))))
                if tiles == 2 { pb = _mm256_add_epi16(pb, _mm256_maddubs_epi16(w, load256(xb + (128 * h + 32 * k)))) }
            }
            return (pa, pb)
        }
        let (a0, b0) = half(0), (a1, b1) = half(1)
        let sg = _mm256_set1_ps(s[g]), og = _mm256_set1_ps(o[g])
        let da = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(a0, ones), _mm256_madd_epi16(a1, ones)))
        f0 = _mm256_fmadd_ps(sg, _mm256_mul_ps(da, loadFloats(dx0 + g &* 8)), _mm256_fnmadd_ps(og, loadFloats(sx0 + g &* 8), f0))
        if tiles == 2 {
            let db = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(b0, ones), _mm256_madd_epi16(b1, ones)))
            f1 = _mm256_fmadd_ps(sg, _mm256_mul_ps(db, loadFloats(dx1 + g &* 8)), _mm256_fnmadd_ps(og, loadFloats(sx1 + g &* 8), f1))
        }
    }
    UnsafeMutableRawPointer(acc).storeBytes(of: f0, as: __m256.self)
    if tiles == 2 { UnsafeMutableRawPointer(acc + 8).storeBytes(of: f1, as: __m256.self) }
}

/// One int8 row (its Q8_0 blocks at `row`) × `tiles` (1 or 2) activation tiles starting at tile t,
/// over groups g0 ..< g1, added to acc[0..<16] as `unsignedCodesTile`.
@inline(__always)
private func int8GEMMTile(_ row: UnsafeRawPointer, _ a: QuantizedActivations, t: Int, tiles: Int, g0: Int, g1: Int,
                          acc: UnsafeMutablePointer<Float>, prefetchDistance: Int) {
    let cols = a.cols, groups = cols / 32
    let x0 = UnsafeRawPointer(a.codes + t * 8 * cols), x1 = UnsafeRawPointer(a.codes + (t + tiles - 1) * 8 * cols)
    let dx0 = a.scalesByGroup + t * groups * 8, dx1 = a.scalesByGroup + (t + tiles - 1) * groups * 8
    let ones = _mm256_set1_epi16(1)
    var f0 = loadFloats(acc), f1 = tiles == 2 ? loadFloats(acc + 8) : _mm256_setzero_ps()
    for g in g0..<g1 {
        let block = row + g &* Int8Block.bytes, xa = x0 + g &* 256, xb = x1 + g &* 256
        if prefetchDistance > 0 { prefetchForRead(block + prefetchDistance) }
        var ia = _mm256_setzero_si256(), ib = ia
        for k in 0..<8 {
            let w = _mm256_set1_epi32(block.loadUnaligned(fromByteOffset: Int8Block.quantsOffset + 4 * k, as: Int32.self))
            let u = _mm256_sign_epi8(w, w)
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(load256(xa + 32 * k), w)), ones))
            if tiles == 2 {
                ib = _mm256_add_epi32(ib, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(load256(xb + 32 * k), w)), ones))
            }
        }
        let sg = _mm256_set1_ps(loadHalf(block))
        f0 = _mm256_fmadd_ps(sg, _mm256_mul_ps(_mm256_cvtepi32_ps(ia), loadFloats(dx0 + g &* 8)), f0)
        if tiles == 2 { f1 = _mm256_fmadd_ps(sg, _mm256_mul_ps(_mm256_cvtepi32_ps(ib), loadFloats(dx1 + g &* 8)), f1) }
    }
    UnsafeMutableRawPointer(acc).storeBytes(of: f0, as: __m256.self)
    if tiles == 2 { UnsafeMutableRawPointer(acc + 8).storeBytes(of: f1, as: __m256.self) }
}

// One specialization per tile count, so the accumulators stay in registers.
@inline(never)
private func unsignedCodesTilePair(_ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
                                   _ a: QuantizedActivations, t: Int, g0: Int, g1: Int, acc: UnsafeMutablePointer<Float>) {
    unsignedCodesTile(c, s, o, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func unsignedCodesTileSingle(_ c: UnsafePointer<UInt8>, _ s: UnsafePointer<Float>, _ o: UnsafePointer<Float>,
                                     _ a: QuantizedActivations, t: Int, g0: Int, g1: Int, acc: UnsafeMutablePointer<Float>) {
    unsignedCodesTile(c, s, o, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc)
}

@inline(never)
private func int8GEMMTilePair(_ row: UnsafeRawPointer, _ a: QuantizedActivations, t: Int, g0: Int, g1: Int,
                              acc: UnsafeMutablePointer<Float>, prefetchDistance: Int) {
    int8GEMMTile(row, a, t: t, tiles: 2, g0: g0, g1: g1, acc: acc, prefetchDistance: prefetchDistance)
}

@inline(never)
private func int8GEMMTileSingle(_ row: UnsafeRawPointer, _ a: QuantizedActivations, t: Int, g0: Int, g1: Int,
                                acc: UnsafeMutablePointer<Float>, prefetchDistance: Int) {
    int8GEMMTile(row, a, t: t, tiles: 1, g0: g0, g1: g1, acc: acc, prefetchDistance: prefetchDistance)
}

// MARK: - driver

/// Weight rows per block: unpacked once, then multiplied with every tile pair of the M block.
private let gemmRowsPerBlock = 16

/// Groups per K chunk: a tile pair's chunk of activation codes (16 × 1,024 bytes) and the block's
/// chunk of weight codes (16 × 1,024) share the 32 KB L1; K = 896 is one chunk. Without chunks a
/// K = 4,864 tile pair (78 KB) came from L2 for every row: 1.08-1.11x the old tiles instead of 1.4x.
private let gemmGroupsPerChunk = 32

/// y[ms, rows] for `interleavedRows` activations (ms starts at a multiple of 8).
func avx2GEMM(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(ms.lowerBound % 8 == 0, "GEMM activation blocks must start at a multiple of 8 rows")
    let distance = QuantKernels.prefetchDistance
    let cols = w.cols, groups = cols / 32, block = gemmRowsPerBlock
    let firstTile = ms.lowerBound / 8, tileEnd = (ms.upperBound + 7) / 8
    let unpacks = w.format != .int8
    // Scratch: unpacked codes [block, K], s and o [block, G], accumulators [block, 16].
    let bytes = (unpacks ? block * (cols + 8 * groups) : 0) + block * 16 * 4
    withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 64) { buffer in
        let base = buffer.baseAddress!
        let acc = (base + (bytes - block * 16 * 4)).assumingMemoryBound(to: Float.self)
        let codes = base.assumingMemoryBound(to: UInt8.self)
        let scale = (base + block * cols).assumingMemoryBound(to: Float.self)
        let offset = (base + block * (cols + 4 * groups)).assumingMemoryBound(to: Float.self)
        var r0 = rows.lowerBound
        while r0 < rows.upperBound {
            let r1 = min(rows.upperBound, r0 + block)
            if unpacks {
                for n in r0..<r1 {
                    let i = n - r0
                    if w.format == .int5 {
                        unpackInt5Row(w.rowPointer(n), cols: cols, codes: codes + i * cols, scale: scale + i * groups,
                                      offset: offset + i * groups, prefetchDistance: distance)
                    } else {
                        unpackInt4Row(w.rowPointer(n), cols: cols, codes: codes + i * cols, scale: scale + i * groups,
                                      offset: offset + i * groups, prefetchDistance: distance)
                    }
                }
            }
            var t = firstTile
            while t < tileEnd {
                let pair = t + 2 <= tileEnd
                acc.update(repeating: 0, count: (r1 - r0) * 16)
                var g0 = 0
                while g0 < groups {
                    let g1 = min(groups, g0 + gemmGroupsPerChunk)
                    for n in r0..<r1 {
                        let i = n - r0
                        if unpacks {
                            let c = UnsafePointer(codes + i * cols), s = UnsafePointer(scale + i * groups), o = UnsafePointer(offset + i * groups)
                            if pair {
                                unsignedCodesTilePair(c, s, o, a, t: t, g0: g0, g1: g1, acc: acc + i * 16)
                            } else {
                                unsignedCodesTileSingle(c, s, o, a, t: t, g0: g0, g1: g1, acc: acc + i * 16)
                            }
                        } else {
                            // int8 reads its blocks in place: the first tile pair streams them from memory and prefetches.
                            let ahead = t == firstTile ? distance : 0
                            if pair {
                                int8GEMMTilePair(w.rowPointer(n), a, t: t, g0: g0, g1: g1, acc: acc + i * 16, prefetchDistance: ahead)
                            } else {
                                int8GEMMTileSingle(w.rowPointer(n), a, t: t, g0: g0, g1: g1, acc: acc + i * 16, prefetchDistance: ahead)
                            }
                        }
                    }
                    g0 = g1
                }
                // Lane i of row n's accumulators is y[8t + i][n]; rows at or past ms.upperBound are padding.
                let m0 = t * 8, live = min(pair ? 16 : 8, ms.upperBound - m0)
                for n in r0..<r1 {
                    for i in 0..<live { y[(m0 + i) * w.rows + n] = acc[(n - r0) * 16 + i] }
                }
                t += 2
            }
            r0 = r1
        }
    }
}
#endif
