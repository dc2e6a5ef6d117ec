// Quantized matrix multiply: y = x · Wᵀ.
// Shape letters used below:  M activation rows (tokens), N = w.rows output features,
// K = w.cols input features, G = K/32 groups per row.  x [M, K] Float32, y [M, N] Float32.
//
// Activations are quantized on the fly to int8 (scale = max|x|/127 per 32 values, per 256 for int4
// weights: see QuantizedActivations); weight and activation codes are multiplied and summed in
// Int32 per group (exact), then each group sum is scaled by (weight scale × activation scale) in
// Float32 (the AVX2 int4 kernels apply the six-bit group scales in Int32 and scale per
// superblock). Weights are read from memory once per call for all M rows (M is blocked inside each
// row tile), which is what makes batched decoding pay. Threads split the output rows N.

#if canImport(Glibc)
import Glibc
#endif

/// Which kernel implementation runs: `activePath` by default, any of `availablePaths` on request.
public enum QuantKernels {
    public enum Path: String, Sendable, CaseIterable {
        /// Plain Swift loops (auto-vectorized): every machine, and the structure of the reference.
        case portable
        /// Explicit AVX2 intrinsics (vpsignb/vpmaddubsw/vpmaddwd + FMA; vpdpbusd in the int8 decode
        /// and small-M kernels of AVX512VNNI builds), compiled under `#if AVX2`.
        case avx2
    }

    /// Whether the int8 decode and small-M kernels multiply bytes with `vpdpbusd` (AVX-512 VNNI
    /// builds) rather than `vpmaddubsw` + `vpmaddwd`; the int5, int4 and GEMM kernels use the
    /// latter on every build.
    public static var usesVNNI: Bool {
        #if AVX512VNNI && AVX2
        return true
        #else
        return false
        #endif
    }

    /// Activation rows from which the AVX2 path uses the GEMM kernels (QuantizedGEMM+AVX2.swift)
    /// and their `interleavedRows` layout; below it the small-M tiles. A setting only so that
    /// `bench kernels` can time both kernel families in one run: set it before any matmul runs.
    nonisolated(unsafe) public static var gemmMinimumRows = 9

    /// Activation rows up to which every row of a call comes out bitwise as that row alone (M = 1)
    /// would, on every path and format: the decode and small-M kernels run one instruction sequence
    /// per activation row (decode is their one-row case), the portable loops work per row, and the
    /// own float path dots one row at a time. From `gemmMinimumRows` (quantized) or
    /// `FloatKernels.sgemmMinimumRows` (float) rows on, the GEMM kernels and sgemm sum in another
    /// order. Speculative verification keeps its k + 1 rows within this, so that at temperature 0 it
    /// computes exactly what one-token decode steps would.
    public static var rowInvariantRows: Int { min(gemmMinimumRows, FloatKernels.sgemmMinimumRows) - 1 }

    /// The path `quantizedMatmul` uses by default on this build.
    public static var activePath: Path {
        #if AVX2
        return .avx2
        #else
        return .portable
        #endif
    }

    /// Paths compiled into this build (tests run every one against the reference).
    public static var availablePaths: [Path] {
        #if AVX2
        return [.portable, .avx2]
        #else
        return [.portable]
        #endif
    }
}

/// x quantized to int8 for one call, with one scale per `scaleBlock` values: 32 for int8 weights (as
/// ggml's Q8_0 activations), 256 for int4 weights (as ggml's Q8_K for Q4_K: one scale per superblock
/// lets the int4 kernels sum a whole superblock's products in Int32 before any float work; the
/// last, truncated block of a row covers the groups that remain). Arrays (row-major over M):
///   codes  [M, K] Int8 in -127...127, in `layout` order (see `position`)
///   scales [M, G] Float  (x ≈ scale · code; per group, equal within a scale block)
///   sums   [M, G] Float  scale · Σ codes over the group (int4's offset term −dmin·m[j]·sum)
///   expandedScales [M, G, E] Float: each scale repeated E = `scaleRepeat` times (8 for natural,
///          none for pairedHalves: no int4 kernel reads it) so the AVX2 int8 tiles multiply by
///          one group's 8-lane broadcast straight from memory.
///   scalesByGroup, sumsByGroup [⌈M/8⌉, G, 8] Float: `scales` and `sums` of 8 consecutive
///          activation rows side by side per group (0 past M): one vector for the 8-row tiles,
///          whose accumulator lanes are activation rows (int8: scales; int5, int4: scales and
///          sums; sumsByGroup is filled for the pairedHalves layout (int5, int4) only).
public struct QuantizedActivations {
    public enum Layout: Sendable {
        /// Group g's 32 codes at k = 32g ..< 32g+32, in order.
        case natural
        /// Groups paired (2p, 2p+1), 64 codes as [g0 x0..15 | g1 x0..15 | g0 x16..31 | g1 x16..31]:
        /// the order in which one 32-byte load of int4 nibbles (two groups) unpacks into low and
        /// high nibbles. A last unpaired group (G odd) stays natural.
        case pairedHalves
        /// Rows in tiles of 8, each tile interleaved in 4-byte pieces: tile t = rows 8t ..< 8t+8,
        /// piece k/4 of the tile = [row 0 k..k+3 | row 1 | ... | row 7] (32 bytes). One 32-byte
        /// load then holds four codes of each of 8 rows, which a broadcast of four weight codes
        /// multiplies with `vpmaddubsw` into lanes that are activation rows (the GEMM kernels,
        /// QuantizedGEMM+AVX2.swift). Rows past M in the last tile are zero.
        case interleavedRows
    }

    public let m: Int
    public let cols: Int
    public let layout: Layout
    /// Values per activation scale: 32 or 256 (see `scaleBlock(for:)`).
    public let scaleBlock: Int
    public let codes: UnsafeMutablePointer<Int8>
    public let scales: UnsafeMutablePointer<Float>
    public let sums: UnsafeMutablePointer<Float>
    public let expandedScales: UnsafeMutablePointer<Float>
    public let scalesByGroup: UnsafeMutablePointer<Float>
    public let sumsByGroup: UnsafeMutablePointer<Float>

    public var groups: Int { cols / 32 }

    public static func scaleRepeat(_ layout: Layout) -> Int { layout == .natural ? 8 : 0 }

    /// The activation scale block every kernel path and the reference use for weights of `format`.
    public static func scaleBlock(for format: WeightFormat) -> Int { format == .int4 || format == .int6 ? 256 : 32 }

    /// Bytes of scratch needed for M × K activations (all parts 64-byte aligned).
    public static func byteCount(m: Int, cols: Int, layout: Layout) -> Int {
        let g = m * (cols / 32)
        let byGroup = align64((m + 7) / 8 * 8 * (cols / 32) * 4)
        return align64(codeCount(m: m, cols: cols, layout: layout)) + 2 * align64(g * 4) + align64(g * 4 * scaleRepeat(layout)) + 2
            * byGroup
    }

    /// Codes stored: M × K, or whole tiles of 8 rows for `interleavedRows`.
    static func codeCount(m: Int, cols: Int, layout: Layout) -> Int {
        layout == .interleavedRows ? (m + 7) / 8 * 8 * cols : m * cols
    }

    /// Lays the arrays out in `buffer` (≥ byteCount bytes, 64-byte aligned).
    public init(m: Int, cols: Int, layout: Layout, scaleBlock: Int = 32, buffer: UnsafeMutableRawPointer) {
        precondition(scaleBlock == 32 || scaleBlock == 256, "activation scale blocks are 32 or 256 values, got \(scaleBlock)")
        self.m = m
        self.cols = cols
        self.layout = layout
        self.scaleBlock = scaleBlock
        let g = m * (cols / 32)
        var offset = 0
        let codeCount = Self.codeCount(m: m, cols: cols, layout: layout)
        codes = buffer.bindMemory(to: Int8.self, capacity: codeCount)
        offset += align64(codeCount)
        scales = (buffer + offset).bindMemory(to: Float.self, capacity: g)
        offset += align64(g * 4)
        sums = (buffer + offset).bindMemory(to: Float.self, capacity: g)
        offset += align64(g * 4)
        expandedScales = (buffer + offset).bindMemory(to: Float.self, capacity: Self.scaleRepeat(layout) * g)
        offset += align64(g * 4 * Self.scaleRepeat(layout))
        let byGroup = (m + 7) / 8 * 8 * (cols / 32)
        scalesByGroup = (buffer + offset).bindMemory(to: Float.self, capacity: byGroup)
        offset += align64(byGroup * 4)
        sumsByGroup = (buffer + offset).bindMemory(to: Float.self, capacity: byGroup)
    }

    /// Index into `codes` of activation row `row`, column k (natural k).
    @inline(__always)
    public func position(_ row: Int, _ k: Int) -> Int {
        if layout == .interleavedRows { return (row >> 3) * 8 * cols + (k >> 2) * 32 + (row & 7) * 4 + (k & 3) }
        let g = k >> 5, i = k & 31
        if layout == .natural || (g == groups - 1 && groups % 2 == 1) { return row * cols + k }
        return row * cols + (g >> 1) * 64 + (i >> 4) * 32 + (g & 1) * 16 + (i & 15)
    }

    /// Quantizes rows `rows` of x [M, K]. Rounds to nearest (ties to even); an all-zero group
    /// gets scale 0 and codes 0. The reference and every kernel use this one function, so they see
    /// identical codes.
    public func quantize(_ x: UnsafePointer<Float>, rows: Range<Int>) {
        let groups = self.groups
        if rows.upperBound == m && m % 8 != 0 {
            // Lanes past the last activation row: zero, so an 8-row tile may read them.
            if layout == .interleavedRows {
                let tile = UnsafeMutableRawPointer(codes + (m / 8) * 8 * cols)
                for piece in 0..<cols / 4 {
                    for lane in m % 8..<8 { tile.storeBytes(of: 0, toByteOffset: piece * 32 + lane * 4, as: UInt32.self) }
                }
            }
            for g in 0..<groups {
                for lane in m % 8..<8 {
                    scalesByGroup[((m / 8) * groups + g) * 8 + lane] = 0
                    sumsByGroup[((m / 8) * groups + g) * 8 + lane] = 0
                }
            }
        }
        let groupsPerBlock = scaleBlock / 32
        for r in rows {
            var amax: Float = 0
            for g in 0..<groups {
                let src = x + r * cols + g * 32
                if g % groupsPerBlock == 0 {
                    // The block's largest magnitude (up to groupsPerBlock groups, fewer at the row's end).
                    amax = maxMagnitude(src, count: (min(groups, g + groupsPerBlock) - g) * 32)
                }
                let scale = amax / 127
                let inverse: Float = amax > 0 ? 127 / amax : 0
                let sum: Int32
                if layout == .interleavedRows {
                    sum = quantizeGroupInterleaved(src, inverse: inverse, to: codes + position(r, g * 32))
                } else {
                    // Each half of 16 codes is contiguous in the natural and pairedHalves layouts.
                    let low = codes + position(r, g * 32), high = codes + position(r, g * 32 + 16)
                    sum = quantizeGroup(src, inverse: inverse, low: low, high: high)
                }
                scales[r * groups + g] = scale
                sums[r * groups + g] = scale * Float(sum)
                if layout == .natural {
                    for e in 0..<8 { expandedScales[(r * groups + g) * 8 + e] = scale }
                } else {
                    sumsByGroup[((r / 8) * groups + g) * 8 + r % 8] = scale * Float(sum)
                }
                scalesByGroup[((r / 8) * groups + g) * 8 + r % 8] = scale
            }
        }
    }
}

@inline(__always)
func align64(_ n: Int) -> Int { (n + 63) & ~63 }

/// max |x[i]| over `count` (a multiple of 32) values.
@inline(__always)
func maxMagnitude(_ x: UnsafePointer<Float>, count: Int) -> Float {
    #if AVX2
    return maxMagnitudeAVX2(x, count: count)
    #else
    var m: Float = 0
    for i in 0..<count { m = max(m, abs(x[i])) }
    return m
    #endif
}

/// Codes of one group of 32 (round to nearest, ties to even, of x·inverse, within ±127): the first
/// 16 to `low`, the last 16 to `high`. Returns Σ codes.
@inline(__always)
func quantizeGroup(_ x: UnsafePointer<Float>, inverse: Float, low: UnsafeMutablePointer<Int8>, high: UnsafeMutablePointer<Int8>) -> Int32 {
    #if AVX2
    return quantizeGroupAVX2(x, inverse: inverse, low: low, high: high)
    #else
    var sum: Int32 = 0
    for i in 0..<32 {
        // |x·inverse| ≤ 127 up to rounding; clamp so a rounding excess cannot wrap.
        let q = Int32(max(-127, min(127, (x[i] * inverse).rounded(.toNearestOrEven))))
        if i < 16 { low[i] = Int8(truncatingIfNeeded: q) } else { high[i - 16] = Int8(truncatingIfNeeded: q) }
        sum &+= q
    }
    return sum
    #endif
}

/// As `quantizeGroup`, storing codes 4j ..< 4j+4 at `to` + 32·j (the `interleavedRows` layout).
@inline(__always)
func quantizeGroupInterleaved(_ x: UnsafePointer<Float>, inverse: Float, to: UnsafeMutablePointer<Int8>) -> Int32 {
    #if AVX2
    return quantizeGroupInterleavedAVX2(x, inverse: inverse, to: to)
    #else
    var sum: Int32 = 0
    for i in 0..<32 {
        let q = Int32(max(-127, min(127, (x[i] * inverse).rounded(.toNearestOrEven))))
        to[(i >> 2) * 32 + (i & 3)] = Int8(truncatingIfNeeded: q)
        sum &+= q
    }
    return sum
    #endif
}

/// y [M, N] = x [M, K] · Wᵀ with W = `w` [N, K]. See the file comment for the arithmetic.
public func quantizedMatmul(
    _ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>,
    pool: ThreadPool
) {
    quantizedMatmul(w, x, m: m, y, pool: pool, path: QuantKernels.activePath)
}

/// As above, with an explicit kernel path (tests compare every path with the reference).
public func quantizedMatmul(
    _ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>,
    pool: ThreadPool, path: QuantKernels.Path
) {
    precondition(m >= 1, "quantizedMatmul needs at least one activation row, got m = \(m)")
    switch w.format {
    case .f32, .f16:
        floatMatmul(w, x, m: m, y, pool: pool)
    case .int8, .int5, .int4, .int6:
        let layout = activationLayout(w.format, path, m: m)
        let bytes = QuantizedActivations.byteCount(m: m, cols: w.cols, layout: layout)
        withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 64) { buffer in
            let a = QuantizedActivations(
                m: m, cols: w.cols, layout: layout, scaleBlock: QuantizedActivations.scaleBlock(for: w.format),
                buffer: buffer.baseAddress!)
            a.quantize(x, pool: pool)
            quantizedMatmul(w, a, y, pool: pool, path: path)
        }
    }
}

/// The integer kernels on already-quantized activations (exposed so tests and benches can time the
/// kernel alone and compare paths on identical codes).
public func quantizedMatmul(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    pool: ThreadPool, path: QuantKernels.Path
) {
    precondition(w.format.traits.isQuantized, "integer kernels take int8/int5/int4/int6 weights, got \(w.format)")
    precondition(a.cols == w.cols, "activations have \(a.cols) columns, weights \(w.cols)")
    precondition(a.layout == activationLayout(w.format, path, m: a.m), "activations quantized in the wrong layout for this kernel")
    precondition(
        a.scaleBlock == QuantizedActivations.scaleBlock(for: w.format),
        "\(w.format) weights take activations with one scale per \(QuantizedActivations.scaleBlock(for: w.format)) values, got \(a.scaleBlock)"
    )
    // Rows are claimed in chunks (a multiple of 8 rows, about 8 chunks per thread) rather than
    // split statically, so a thread descheduled on a busy machine does not hold up the call.
    pool.dynamicFor(w.rows, grain: rowGrain(w, pool)) { _, rows in
        runRows(w, a, y, rows: rows, path: path)
    }
}

/// y_i = x · W_iᵀ for several matrices that share their input (attention's q, k, v; the
/// feed-forward's gate and up), all with the same `cols`. x is quantized once per activation layout
/// the formats need and ONE pool call covers the rows of every matrix: a decode step wakes the threads once instead
/// of three times, and the small matrices (k, v: 128 rows) are balanced together with the big one.
/// Float-format matrices are computed one by one (as `quantizedMatmul`).
public func quantizedMatmul(
    _ ws: [QuantizedMatrix], _ x: UnsafePointer<Float>, m: Int, _ ys: [UnsafeMutablePointer<Float>],
    pool: ThreadPool
) {
    precondition(ws.count == ys.count, "\(ws.count) matrices but \(ys.count) outputs")
    precondition(m >= 1, "quantizedMatmul needs at least one activation row, got m = \(m)")
    guard let cols = ws.first?.cols, ws.allSatisfy({ $0.format.traits.isQuantized && $0.cols == cols }) else {
        for (w, y) in zip(ws, ys) { quantizedMatmul(w, x, m: m, y, pool: pool) }
        return
    }
    let path = QuantKernels.activePath
    // One activation quantization per (layout, scale block) that the formats present need: int8
    // and int5 share theirs from `gemmMinimumRows` rows on (both interleaved, one scale per 32),
    // int4 and int6 always (same layout, one scale per 256).
    let formats: [WeightFormat] = [.int8, .int5, .int4, .int6]
    let present = formats.map { f in ws.contains { $0.format == f } }
    func needs(_ f: WeightFormat) -> (QuantizedActivations.Layout, Int) {
        (activationLayout(f, path, m: m), QuantizedActivations.scaleBlock(for: f))
    }
    // owner[i]: the first present format whose activations format i can use (i itself if none before).
    let owner = formats.indices.map { i in formats.indices.first { j in present[j] && needs(formats[j]) == needs(formats[i]) } ?? i }
    let sizes = formats.indices.map { i in
        present[i] && owner[i] == i ? QuantizedActivations.byteCount(m: m, cols: cols, layout: needs(formats[i]).0) : 0
    }
    withUnsafeTemporaryAllocation(byteCount: sizes.reduce(0, +), alignment: 64) { buffer in
        func activations(_ format: WeightFormat, offset: Int) -> QuantizedActivations {
            let (layout, scaleBlock) = needs(format)
            let a = QuantizedActivations(m: m, cols: cols, layout: layout, scaleBlock: scaleBlock, buffer: buffer.baseAddress! + offset)
            a.quantize(x, pool: pool)
            return a
        }
        var offset = 0
        var quantized: [QuantizedActivations?] = []
        for i in formats.indices {
            if !present[i] {
                quantized.append(nil)
            } else if owner[i] != i {
                quantized.append(quantized[owner[i]])
            } else {
                quantized.append(activations(formats[i], offset: offset))
            }
            offset += sizes[i]
        }
        // Chunks of each matrix's rows, numbered consecutively over the matrices (≤ 4 matrices:
        // finding a chunk's matrix by a scan is cheaper than building a table).
        withUnsafeTemporaryAllocation(of: Int.self, capacity: ws.count + 1) { firstChunk in
            firstChunk[0] = 0
            for (i, w) in ws.enumerated() { firstChunk[i + 1] = firstChunk[i] + (w.rows + rowGrain(w, pool) - 1) / rowGrain(w, pool) }
            pool.dynamicFor(firstChunk[ws.count], grain: 1) { _, chunks in
                for chunk in chunks {
                    var i = 0
                    while firstChunk[i + 1] <= chunk { i += 1 }
                    let w = ws[i], grain = rowGrain(w, pool)
                    let start = (chunk - firstChunk[i]) * grain
                    runRows(w, quantized[formats.firstIndex(of: w.format)!]!, ys[i], rows: start..<min(w.rows, start + grain), path: path)
                }
            }
        }
    }
}

extension QuantizedActivations {
    /// Quantizes all M rows of x, split over `pool` from 8 rows on (batched steps and prefill: the
    /// other cores would idle; below 8 rows one pool call costs about what it saves, see
    /// docs/kernels.md).
    func quantize(_ x: UnsafePointer<Float>, pool: ThreadPool) {
        if m >= 8 {
            pool.parallelFor(m) { _, rows in quantize(x, rows: rows) }
        } else {
            quantize(x, rows: 0..<m)
        }
    }
}

/// Rows per claimed chunk: a multiple of 8, about 8 chunks per thread.
@inline(__always)
func rowGrain(_ w: QuantizedMatrix, _ pool: ThreadPool) -> Int {
    max(8, (w.rows / (pool.threads * 8) + 7) / 8 * 8)
}

/// The kernels over weight rows `rows` and every activation row, M blocked so that one block's
/// codes stay in cache while the weight rows stream by; for decode-sized M there is one block, so
/// each weight byte is read once per call. The portable kernels keep a block in L2 (≤ ~256 KB).
/// The AVX2 GEMM (M ≥ `QuantKernels.gemmMinimumRows`) unpacks each weight row once per block, so
/// its blocks are as large as L3 comfortably holds (≤ 8 MB, split evenly): a 512-row prefill step is
/// one block even at K = 8,960 (256 KB blocks were 16 rows there, each row unpacked 32 times and
/// multiplied by 2-tile kernels; docs/kernels.md). (A multiple of 16 rows, so that a block's 8-row
/// tiles split into the GEMM kernels' groups of 4 and 2 tiles without a lone one, except at the end.)
@inline(__always)
func runRows(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>, rows: Range<Int>,
    path: QuantKernels.Path
) {
    let budget = path == .avx2 && a.m >= QuantKernels.gemmMinimumRows ? 8 << 20 : 256 << 10
    let blocks = (a.m * a.cols + budget - 1) / budget
    let mBlock = a.m <= 16 ? a.m : max(16, ((a.m + blocks - 1) / blocks + 15) / 16 * 16)
    var m0 = 0
    while m0 < a.m {
        let m1 = min(a.m, m0 + mBlock)
        runKernel(w, a, y, rows: rows, ms: m0..<m1, path: path)
        m0 = m1
    }
}

/// The activation code order the kernel for `m` activation rows reads: the AVX2 GEMM kernels
/// (m ≥ `QuantKernels.gemmMinimumRows`) read `interleavedRows`, the AVX2 int4/int5/int6 decode and
/// small-M tiles `pairedHalves`, everything else `natural`.
public func activationLayout(_ format: WeightFormat, _ path: QuantKernels.Path, m: Int) -> QuantizedActivations.Layout {
    guard path == .avx2 else { return .natural }
    #if AVX2
    if m >= QuantKernels.gemmMinimumRows { return .interleavedRows }
    #endif
    return format == .int4 || format == .int5 || format == .int6 ? .pairedHalves : .natural
}

@inline(__always)
func runKernel(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>, path: QuantKernels.Path
) {
    switch (path, w.format) {
    case (.portable, .int8): portableInt8(w, a, y, rows: rows, ms: ms)
    case (.portable, .int5): portableInt5(w, a, y, rows: rows, ms: ms)
    case (.portable, .int6): portableInt6(w, a, y, rows: rows, ms: ms)
    case (.portable, _): portableInt4(w, a, y, rows: rows, ms: ms)
    case (.avx2, _):
        #if AVX2
        if a.layout == .interleavedRows {
            avx2GEMM(w, a, y, rows: rows, ms: ms)
            return
        }
        switch w.format {
        case .int4: avx2Int4(w, a, y, rows: rows, ms: ms)
        case .int5: avx2Int5(w, a, y, rows: rows, ms: ms)
        case .int6: avx2Int6(w, a, y, rows: rows, ms: ms)
        default: avx2Int8(w, a, y, rows: rows, ms: ms)
        }
        #else
        preconditionFailure("the AVX2 kernels are not compiled into this build (no AVX2 define)")
        #endif
    }
}

// MARK: - Reference

/// Plain loops, one output at a time, on the same quantized activations as the kernels:
///   int8: y[m][n] = Σ_g  sx[m][g] · dw[n][g] · Σ_i qw·qx
///   int5: y[m][n] = Σ_g  sx[m][g] · d[n][g] · Σ_i q·qx  −  16·d[n][g] · (sx[m][g]·Σ_i qx)
///   int4: y[m][n] = Σ_g  sx[m][g] · d·sc[g] · Σ_i q·qx  −  dmin·mn[g] · (sx[m][g]·Σ_i qx)
///   int6: y[m][n] = Σ_g  sx[m][g] · d · Σ_{s in g} sc[s] · Σ_{i in s} (q − 32)·qx   (two sub-blocks s per group)
/// f32/f16: y[m][n] = Σ_k w·x in Float32, no activation quantization.
public func quantizedMatmulReference(_ w: QuantizedMatrix, _ x: UnsafePointer<Float>, m: Int, _ y: UnsafeMutablePointer<Float>) {
    switch w.format {
    case .f32, .f16:
        let row = UnsafeMutablePointer<Float>.allocate(capacity: w.cols)
        defer { row.deallocate() }
        for n in 0..<w.rows {
            w.dequantizeRow(n, into: row)
            for mi in 0..<m {
                var s: Float = 0
                for k in 0..<w.cols { s += row[k] * x[mi * w.cols + k] }
                y[mi * w.rows + n] = s
            }
        }
    case .int8, .int5, .int4, .int6:
        let bytes = QuantizedActivations.byteCount(m: m, cols: w.cols, layout: .natural)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        let a = QuantizedActivations(
            m: m, cols: w.cols, layout: .natural, scaleBlock: QuantizedActivations.scaleBlock(for: w.format),
            buffer: buffer)
        a.quantize(x, rows: 0..<m)
        quantizedMatmulReference(w, a, y)
    }
}

/// The reference on already-quantized activations.
public func quantizedMatmulReference(_ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>) {
    let groups = w.cols / 32
    for mi in 0..<a.m {
        for n in 0..<w.rows {
            let row = w.rowPointer(n)
            var total: Float = 0
            for g in 0..<groups {
                let sx = a.scales[mi * groups + g]
                if w.format == .int8 {
                    let block = row + g * Int8Block.bytes
                    let qw = (block + Int8Block.quantsOffset).assumingMemoryBound(to: Int8.self)
                    var dot: Int32 = 0
                    for i in 0..<32 { dot += Int32(qw[i]) * Int32(a.codes[a.position(mi, g * 32 + i)]) }
                    total += Float(dot) * (loadHalf(block) * sx)
                } else if w.format == .int5 {
                    let sb = row + (g / 8) * Int5Superblock.bytes
                    var dot: Int32 = 0
                    for i in 0..<32 { dot += Int32(Int5Superblock.code(sb, g % 8, i)) * Int32(a.codes[a.position(mi, g * 32 + i)]) }
                    let d = Float(Float16(bitPattern: Int5Superblock.scaleBits(sb, g % 8)))
                    total += Float(dot) * (d * sx) - 16 * d * a.sums[mi * groups + g]
                } else if w.format == .int6 {
                    let sb = row + (g / 8) * Int6Superblock.bytes
                    var scaled: Int32 = 0
                    for s in 2 * (g % 8)..<2 * (g % 8) + 2 {
                        var dot: Int32 = 0
                        for i in 16 * s..<16 * s + 16 {
                            dot += (Int32(Int6Superblock.code(sb, i)) - 32) * Int32(a.codes[a.position(mi, (g / 8) * 256 + i)])
                        }
                        scaled += Int32(Int6Superblock.scale(sb, s)) * dot
                    }
                    total += Float(scaled) * (Float(Float16(bitPattern: Int6Superblock.dBits(sb))) * sx)
                } else {
                    let sb = row + (g / 8) * Int4Superblock.bytes
                    let j = g % 8
                    let (sc, mn) = Int4Superblock.scaleMin((sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self), j)
                    let nib = (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self)
                    var dot: Int32 = 0
                    for i in 0..<16 {
                        dot +=
                            Int32(nib[i] & 0xF) * Int32(a.codes[a.position(mi, g * 32 + i)])
                            + Int32(nib[i] >> 4) * Int32(a.codes[a.position(mi, g * 32 + 16 + i)])
                    }
                    let d = loadHalf(sb + Int4Superblock.dOffset), dmin = loadHalf(sb + Int4Superblock.dminOffset)
                    total += Float(dot) * (d * Float(sc) * sx) - dmin * Float(mn) * a.sums[mi * groups + g]
                }
            }
            y[mi * w.rows + n] = total
        }
    }
}
