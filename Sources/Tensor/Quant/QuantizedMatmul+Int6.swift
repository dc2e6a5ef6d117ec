// AVX2 kernels for int6 weights (Q6_K's values, WeightFormat.swift) for decode and small M
// (M < gemmMinimumRows; the GEMM path in QuantizedGEMM+AVX2.swift unpacks int6 rows itself).
// Compiled under `#if AVX2`. Shapes as in QuantizedMatmul.swift: weights [N, K] (K a multiple of
// 256), activation codes [M, K] in the pairedHalves layout with one scale per 256 (as ggml's Q8_K),
// y [M, N].
//
// Products per superblock b (16 sub-blocks s of 16 weights), weight row r, activation row m:
//   one 32-byte load of nibbles covers a pair of groups, as int4's and int5's: with the two high
//   bits ORed in (two 32-byte high-bit planes per superblock, a shift and a mask per vector) it
//   gives code vectors lo = [A w0..15 | B w0..15], hi = [A w16..31 | B w16..31], each 16-byte half
//   one sub-block, q in 0...63 unsigned:
//     p32 += madd(maddubs(lo, xlo), [sc ×8 | sc' ×8]) + madd(maddubs(hi, xhi), ...)
//   (u8·s8 pairs ≤ 2·63·127 fit Int16; the vector's two scales spread from the Int16 scale vector by
//   one vpshufb with a constant control). The offset −32 comes once per superblock from the
//   activations' sub-block sums Σx_s (16 Int16, computed once per call, `int6ActivationSums`):
//     p32 −= 32 · madd([Σx_s], [sc_s]);  acc += float(p32) · (d · dx_b)
//   so the superblock's Σ_s sc_s · Σ_i (q − 32)·x stays exact in Int32 (< 2^26) and the float work is
//   once per superblock.
// Register blocking: one weight row × MB ≤ 4 activation rows (8 on AVX-512 builds, whose 32
// vector registers hold the 16 accumulators; a step of 5-8 rows, batched decode or a speculative
// verification, then reads the weights once instead of twice), its codes unpacked once per
// superblock for the MB rows; activation blocks outer, the thread's rows inner (as the int4/int5
// tiles). Decode (MB = 1) prefetches each row's lines
// `QuantKernels.prefetchDistance` ahead, as the other decode kernels.
// No VNNI form: vpmaddubsw + vpmaddwd on every build (LLVM fuses vpmaddwd + vpaddd into vpdpwssd
// on a VNNI target).

#if AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func load256(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }

/// Bits 4-5 of every byte of code vector v's high bits: plane v / 4 holds them at bits
/// 2(v % 4) ..< 2(v % 4) + 2 of each byte; a 16-bit shift moves them to bits 4-5 of the same byte
/// (what crosses a byte boundary is masked off). v is a constant wherever a superblock is unrolled.
@inline(__always)
private func int6HighBits(_ plane: __m256i, _ k: Int) -> __m256i {
    let bits45 = _mm256_set1_epi8(0x30)
    switch k {
    case 0: return _mm256_and_si256(_mm256_slli_epi16(plane, 4), bits45)
    case 1: return _mm256_and_si256(_mm256_slli_epi16(plane, 2), bits45)
    case 2: return _mm256_and_si256(plane, bits45)
    default: return _mm256_and_si256(_mm256_srli_epi16(plane, 2), bits45)
    }
}

/// The two code vectors (0...63 per byte) of pair chunk p (0..<4) of the superblock at `sb`:
/// [A w0..15 | B w0..15] (vector 2p) and [A w16..31 | B w16..31] (vector 2p + 1), the pairedHalves
/// activation order. h0, h1: the superblock's two high-bit planes.
@inline(__always)
func int6Pair(_ sb: UnsafeRawPointer, _ h0: __m256i, _ h1: __m256i, _ p: Int) -> (__m256i, __m256i) {
    let mask = _mm256_set1_epi8(0x0F)
    let v = load256(sb + Int6Superblock.nibblesOffset + 32 * p)
    let plane = p < 2 ? h0 : h1
    return (
        _mm256_or_si256(_mm256_and_si256(v, mask), int6HighBits(plane, (2 * p) & 3)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), int6HighBits(plane, (2 * p + 1) & 3))
    )
}

/// vpshufb control putting Int16 lane v of each 128-bit half in all 8 Int16 lanes of that half: for
/// the sign-extended stored scales, vector v's low-half scale below and its high-half scale above.
@inline(__always)
private func int6ScaleSpread(_ v: Int) -> __m256i {
    _mm256_set1_epi16(Int16(2 * v) | Int16(2 * v + 1) << 8)
}

/// Row m's sub-block sums of activation codes (pairedHalves layout), 16 Int16 per superblock in the
/// stored scale order (WeightFormat.swift: even 16-byte runs of the superblock's codes, then odd
/// ones), to `out[0 ..< K/16]`: per 32-byte chunk vpmaddubsw by 1 and vpmaddwd by 1 give four
/// partial sums per run, two vphaddd levels a run's sum, and vpackssdw lays the 16 runs out
/// (|Σ| ≤ 16·127 fits Int16).
@inline(__always)
func int6ActivationSums(_ a: QuantizedActivations, row m: Int, into out: UnsafeMutablePointer<Int16>) {
    let ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1)
    let x = UnsafeRawPointer(a.codes + m * a.cols)
    for b in 0..<a.cols / 256 {
        let xb = x + 256 * b
        @inline(__always) func quads(_ c: Int) -> __m256i { _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, load256(xb + 32 * c)), ones16) }
        // Low 128 bits: runs 0, 2, 4, 6 (of chunks 0-3); high: runs 1, 3, 5, 7. Likewise chunks 4-7.
        let first = _mm256_hadd_epi32(_mm256_hadd_epi32(quads(0), quads(1)), _mm256_hadd_epi32(quads(2), quads(3)))
        let second = _mm256_hadd_epi32(_mm256_hadd_epi32(quads(4), quads(5)), _mm256_hadd_epi32(quads(6), quads(7)))
        UnsafeMutableRawPointer(out + 16 * b).storeBytes(of: _mm256_packs_epi32(first, second), as: __m256i.self)
    }
}

/// One int6 row × MB (1...`int6TileHeight`) activation rows m0 ..< m0 + MB; `sums` holds row m0's sub-block sums
/// (`int6ActivationSums`), the next rows' K/16 further on.
@inline(__always)
private func int6Tile(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, _ sums: UnsafePointer<Int16>,
    n: Int, m0: Int, MB: Int, prefetchDistance: Int
) {
    let cols = w.cols, groups = cols / 32, sumStride = cols / 16
    let row = w.rowPointer(n)
    let x = UnsafeRawPointer(a.codes + m0 &* cols)
    let xs = a.scales + m0 &* groups
    var acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0, acc6 = acc0, acc7 = acc0
    var b = 0
    while b < cols / 256 {
        let sb = row + b &* Int6Superblock.bytes
        prefetchForRead(sb + prefetchDistance)
        prefetchForRead(sb + (prefetchDistance &+ 64))
        prefetchForRead(sb + (prefetchDistance &+ 128))
        prefetchForRead(sb + (prefetchDistance &+ 192))
        let h0 = load256(sb + Int6Superblock.highBitsOffset), h1 = load256(sb + (Int6Superblock.highBitsOffset + 32))
        let sc16 = _mm256_cvtepi8_epi16(sb.loadUnaligned(fromByteOffset: Int6Superblock.scalesOffset, as: __m128i.self))
        var p0 = _mm256_setzero_si256(), p1 = p0, p2 = p0, p3 = p0, p4 = p0, p5 = p0, p6 = p0, p7 = p0
        let xb = x + b &* 256
        @inline(__always) func pair(_ p: Int) {
            let (lo, hi) = int6Pair(sb, h0, h1, p)
            let sLo = _mm256_shuffle_epi8(sc16, int6ScaleSpread(2 * p)), sHi = _mm256_shuffle_epi8(sc16, int6ScaleSpread(2 * p + 1))
            @inline(__always) func add(_ part: inout __m256i, _ i: Int) {
                let xi = xb + (i &* cols &+ 64 * p)
                part = _mm256_add_epi32(part, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(xi)), sLo))
                part = _mm256_add_epi32(part, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(xi + 32)), sHi))
            }
            add(&p0, 0)
            if MB > 1 { add(&p1, 1) }
            if MB > 2 { add(&p2, 2) }
            if MB > 3 { add(&p3, 3) }
            if MB > 4 { add(&p4, 4) }
            if MB > 5 { add(&p5, 5) }
            if MB > 6 { add(&p6, 6) }
            if MB > 7 { add(&p7, 7) }
        }
        pair(0); pair(1); pair(2); pair(3)
        let d = _mm256_cvtph_ps(_mm_set1_epi16(sb.loadUnaligned(as: Int16.self)))
        @inline(__always) func finish(_ acc: inout __m256, _ part: __m256i, _ i: Int) {
            let offset = _mm256_madd_epi16(load256(sums + (i &* sumStride &+ 16 &* b)), sc16)
            let total = _mm256_sub_epi32(part, _mm256_slli_epi32(offset, 5))
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(xs[i &* groups &+ 8 &* b])), acc)
        }
        finish(&acc0, p0, 0)
        if MB > 1 { finish(&acc1, p1, 1) }
        if MB > 2 { finish(&acc2, p2, 2) }
        if MB > 3 { finish(&acc3, p3, 3) }
        if MB > 4 { finish(&acc4, p4, 4) }
        if MB > 5 { finish(&acc5, p5, 5) }
        if MB > 6 { finish(&acc6, p6, 6) }
        if MB > 7 { finish(&acc7, p7, 7) }
        b &+= 1
    }
    @inline(__always) func store(_ acc: __m256, _ i: Int) {
        let v = unsafeBitCast(acc, to: SIMD8<Float>.self)
        let s = (v.lowHalf + v.highHalf)
        y[(m0 + i) * w.rows + n] = (s[0] + s[2]) + (s[1] + s[3])
    }
    store(acc0, 0)
    if MB > 1 { store(acc1, 1) }
    if MB > 2 { store(acc2, 2) }
    if MB > 3 { store(acc3, 3) }
    if MB > 4 { store(acc4, 4) }
    if MB > 5 { store(acc5, 5) }
    if MB > 6 { store(acc6, 6) }
    if MB > 7 { store(acc7, 7) }
}

#if AVX512VNNI
let int6TileHeight = 8
#else
let int6TileHeight = 4
#endif

// One specialization per tile height, so the accumulators stay in registers.
private typealias Int6TileFunction = @Sendable (
    QuantizedMatrix, QuantizedActivations, UnsafeMutablePointer<Float>, UnsafePointer<Int16>, Int, Int, Int
) -> Void
private let int6Tiles: [Int6TileFunction] = [
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 1, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 2, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 3, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 4, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 5, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 6, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 7, prefetchDistance: $6) },
    { int6Tile($0, $1, $2, $3, n: $4, m0: $5, MB: 8, prefetchDistance: $6) },
]

func avx2Int6(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>, ms: Range<Int>) {
    precondition(w.cols % 256 == 0, "int6 rows hold whole superblocks, got \(w.cols) columns")
    let sumStride = w.cols / 16
    let distance = ms.count == 1 ? QuantKernels.decodePrefetchDistance : QuantKernels.prefetchDistance  // once per call (see avx2Int8)
    withUnsafeTemporaryAllocation(of: Int16.self, capacity: ms.count * sumStride) { buffer in
        let sums = buffer.baseAddress!
        for (i, m) in ms.enumerated() { int6ActivationSums(a, row: m, into: sums + i * sumStride) }
        // Activation blocks outer, rows inner (as avx2Int4).
        var m0 = ms.lowerBound
        while m0 < ms.upperBound {
            let mb = min(int6TileHeight, ms.upperBound - m0)
            let tile = int6Tiles[mb - 1]
            let blockSums = UnsafePointer(sums + (m0 - ms.lowerBound) * sumStride)
            for n in rows { tile(w, a, y, blockSums, n, m0, distance) }
            m0 += mb
        }
    }
}
#endif
