import Foundation
import XCTest
import Tensor
import TestSupport

/// Every kernel path against `quantizedMatmulReference` on the same quantized activations.
///
/// Tolerance: products are summed exactly in Int32 per group of 32, so kernel and reference differ
/// only in Float32 rounding of the per-group scaling and of the order in which the G = K/32 group
/// terms (and the int4 offset terms) are added. That error is at most about (G + 8) roundings of
/// the sum of the terms' magnitudes, so we allow
///     |y − ref| ≤ (G + 8) · 2^-23 · 4 · Σ_k |ŵ_k|·|x_k|  + 1e-6
/// (the factor 4 covers the int4 split of each term into a scale part and an offset part, each as
/// large as the weight; for int5 |ŵ_k| is replaced by its two parts' sum |d|·(q + 16), since a
/// weight near 0 is d·q − 16·d with both parts large). A missing or doubled group would change y
/// by about Σ|ŵx|/G, far above it.
final class QuantizedMatmulTests: XCTestCase {
    func testSmallShapesAllM() {
        var rng = SeededGenerator(seed: 21)
        for format in [WeightFormat.int8, .int5, .int4] {
            for rows in [1, 3, 31, 33] {
                for cols in [32, 96, 288, 896] {
                    let w = makeWeights(&rng, rows: rows, cols: cols, format: format)
                    for threads in [1, 2] {
                        let pool = pools[threads - 1]
                        for m in 1...17 {
                            check(w, m: m, pool: pool, rng: &rng, label: "\(format) \(rows)x\(cols) M=\(m) threads=\(threads)")
                        }
                    }
                }
            }
        }
    }

    func testModelShapes() {
        var rng = SeededGenerator(seed: 22)
        for format in [WeightFormat.int8, .int5, .int4] {
            for (rows, cols, ms) in [(896, 896, [1, 4, 17]), (4864, 896, [1, 5]), (896, 4864, [1, 16]), (33, 4864, [3, 8])] {
                let w = makeWeights(&rng, rows: rows, cols: cols, format: format)
                for threads in [1, 2] {
                    for m in ms {
                        check(w, m: m, pool: pools[threads - 1], rng: &rng, label: "\(format) \(rows)x\(cols) M=\(m) threads=\(threads)")
                    }
                }
            }
        }
    }

    /// Larger M: several 8-row tiles plus remainders, and more than one activation block per call
    /// (the portable kernels' blocks of 48 rows at K = 4864; the GEMM's at M · K past 8 MB: 1040 ×
    /// 8960 is two blocks, 528 and 512 rows; 48 rows are 4 tiles and then a pair, 528 too).
    func testLargerM() {
        var rng = SeededGenerator(seed: 25)
        for format in [WeightFormat.int8, .int5, .int4] {
            for (rows, cols, ms) in [(33, 4864, [31, 48, 64]), (7, 896, [64]), (5, 96, [512]), (3, 8960, [1040])] {
                let w = makeWeights(&rng, rows: rows, cols: cols, format: format)
                for m in ms {
                    check(w, m: m, pool: pools[1], rng: &rng, label: "\(format) \(rows)x\(cols) M=\(m) threads=2")
                }
            }
        }
    }

    /// The grouped entry point (several matrices sharing one input, one pool call) gives each
    /// matrix what the reference gives it alone: mixed int8/int5/int4 groups (two activation
    /// quantizations: int8 and int5 share one), row counts that split into uneven chunks, and a float group (fallback).
    func testGroupedMatmulMatchesReference() {
        var rng = SeededGenerator(seed: 26)
        let groups: [[(Int, WeightFormat)]] = [
            [(33, .int4), (31, .int8), (8, .int4), (9, .int5)], [(896, .int5), (128, .int4), (128, .int8)],
            [(40, .int8)], [(17, .f16), (9, .int4)], [(24, .int5)],
        ]
        for (gi, group) in groups.enumerated() {
            let cols = gi == 1 ? 896 : 288
            let ws = group.map { makeWeights(&rng, rows: $0.0, cols: cols, format: $0.1) }
            for threads in [1, 2] {
                for m in [1, 3, 17, 40] {
                    let x = rng.floats(m * cols, in: -2...2)
                    let pointers = ws.map { w -> UnsafeMutablePointer<Float> in
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: m * w.rows)
                        p.initialize(repeating: .nan, count: m * w.rows)
                        return p
                    }
                    defer { pointers.forEach { $0.deallocate() } }
                    x.withUnsafeBufferPointer { quantizedMatmul(ws, $0.baseAddress!, m: m, pointers, pool: pools[threads - 1]) }
                    for (i, w) in ws.enumerated() {
                        let got = Array(UnsafeBufferPointer(start: pointers[i], count: m * w.rows))
                        assertWithinBound(
                            got, w, x: x, m: m, label: "group \(gi) matrix \(i) (\(w.format) \(w.rows)x\(cols)) M=\(m) threads=\(threads)")
                    }
                }
            }
        }
    }

    /// f32/f16 weights go through the float path (no activation quantization).
    func testFloatFormats() {
        var rng = SeededGenerator(seed: 23)
        for format in [WeightFormat.f32, .f16] {
            for (rows, cols) in [(1, 7), (33, 96), (31, 100)] {
                let w = makeWeights(&rng, rows: rows, cols: cols, format: format)
                for m in [1, 3, 17] {
                    let x = rng.floats(m * cols)
                    var got = [Float](repeating: .nan, count: m * rows), want = got
                    x.withUnsafeBufferPointer { xp in
                        got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[1]) }
                        want.withUnsafeMutableBufferPointer { quantizedMatmulReference(w, xp.baseAddress!, m: m, $0.baseAddress!) }
                    }
                    // Different summation order over K ≤ 100 products of |w|,|x| ≤ 1.
                    XCTAssertNil(mismatch(got, want, absolute: 1e-5), "\(format) \(rows)x\(cols) M=\(m)")
                }
            }
        }
    }

    /// The quantized matmul approximates the float product: error bounded by activation and weight
    /// quantization (a sanity check of the scaling, independent of the reference's arithmetic).
    func testCloseToFloatProduct() {
        var rng = SeededGenerator(seed: 24)
        let rows = 64, cols = 512, m = 3
        let wf = rng.floats(rows * cols), x = rng.floats(m * cols)
        for (format, relative) in [(WeightFormat.int8, Float(0.02)), (.int5, 0.06), (.int4, 0.12)] {
            let w = wf.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
            var got = [Float](repeating: 0, count: m * rows)
            x.withUnsafeBufferPointer { xp in
                got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pools[1]) }
            }
            var err: Float = 0, norm: Float = 0
            for mi in 0..<m {
                for r in 0..<rows {
                    var exact: Float = 0
                    for k in 0..<cols { exact += wf[r * cols + k] * x[mi * cols + k] }
                    err += (got[mi * rows + r] - exact) * (got[mi * rows + r] - exact)
                    norm += exact * exact
                }
            }
            XCTAssertLessThan((err / norm).squareRoot(), relative, "\(format) relative RMS error vs float product")
        }
    }

    // MARK: helpers

    private let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]

    private func makeWeights(_ rng: inout SeededGenerator, rows: Int, cols: Int, format: WeightFormat) -> QuantizedMatrix {
        var w = rng.floats(rows * cols)
        // Vary magnitudes across groups and rows, with some skewed groups, like real weights.
        for g in 0..<(rows * cols / 32) where format.traits.isQuantized {
            let scale: Float = [0.02, 1, 0.3, 5][g % 4]
            let shift: Float = g % 5 == 0 ? 0.6 : 0
            for i in 0..<32 { w[g * 32 + i] = (w[g * 32 + i] + shift) * scale }
        }
        return w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
    }

    /// Per weight, the magnitude of what the kernels add for it (see the file comment): |ŵ|, or
    /// for int5 |d|·(q + 16).
    private func termMagnitudes(_ w: QuantizedMatrix) -> [Float] {
        guard w.format == .int5 else { return w.dequantize().array.map(abs) }
        var out: [Float] = []
        out.reserveCapacity(w.rows * w.cols)
        for r in 0..<w.rows {
            for g in 0..<w.cols / 32 {
                let sb = w.rowPointer(r) + (g / 8) * Int5Superblock.bytes
                let d = abs(Float(Float16(bitPattern: Int5Superblock.scaleBits(sb, g % 8))))
                for i in 0..<32 { out.append(d * Float(Int(Int5Superblock.code(sb, g % 8, i)) + 16)) }
            }
        }
        return out
    }

    /// `got` against the reference for w and x within the file comment's bound (float formats:
    /// summation order only).
    private func assertWithinBound(_ got: [Float], _ w: QuantizedMatrix, x: [Float], m: Int, label: String) {
        let cols = w.cols, rows = w.rows
        var want = [Float](repeating: .nan, count: m * rows)
        x.withUnsafeBufferPointer { xp in
            want.withUnsafeMutableBufferPointer { quantizedMatmulReference(w, xp.baseAddress!, m: m, $0.baseAddress!) }
        }
        let magnitudes = termMagnitudes(w)
        let factor = Float(cols / 32 + 8) * 4 / Float(1 << 23)
        var bad: [String] = []
        for mi in 0..<m {
            for r in 0..<rows {
                var s: Float = 0
                for k in 0..<cols { s += magnitudes[r * cols + k] * abs(x[mi * cols + k]) }
                let i = mi * rows + r
                if !(abs(got[i] - want[i]) <= factor * s + 1e-5), bad.count < 4 {
                    bad.append("[m \(mi), row \(r)] \(got[i]) vs \(want[i])")
                }
            }
        }
        XCTAssertTrue(bad.isEmpty, "\(label): " + bad.joined(separator: ", "))
    }

    private func check(_ w: QuantizedMatrix, m: Int, pool: ThreadPool, rng: inout SeededGenerator, label: String) {
        let cols = w.cols, rows = w.rows
        var x = rng.floats(m * cols, in: -2...2)
        if m > 2 { for k in 0..<cols { x[2 * cols + k] = 0 } }  // an all-zero activation row
        let magnitudes = termMagnitudes(w)
        var want = [Float](repeating: .nan, count: m * rows)
        x.withUnsafeBufferPointer { xp in
            want.withUnsafeMutableBufferPointer { quantizedMatmulReference(w, xp.baseAddress!, m: m, $0.baseAddress!) }
        }
        // Per-output bound from the file comment.
        var bound = [Float](repeating: 0, count: m * rows)
        let factor = Float(cols / 32 + 8) * 4 / Float(1 << 23)
        for mi in 0..<m {
            for r in 0..<rows {
                var s: Float = 0
                for k in 0..<cols { s += magnitudes[r * cols + k] * abs(x[mi * cols + k]) }
                bound[mi * rows + r] = factor * s + 1e-6
            }
        }
        for path in QuantKernels.availablePaths {
            var got = [Float](repeating: .nan, count: m * rows)
            x.withUnsafeBufferPointer { xp in
                got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pool, path: path) }
            }
            var bad: [String] = []
            for i in 0..<got.count where !(abs(got[i] - want[i]) <= bound[i]) {
                if bad.count < 4 { bad.append("[m \(i / rows), row \(i % rows)] \(got[i]) vs \(want[i]) (bound \(bound[i]))") }
            }
            XCTAssertTrue(bad.isEmpty, "\(label) path \(path.rawValue): " + bad.joined(separator: ", "))
        }
    }
}

final class QuantKernelsTests: XCTestCase {
    /// Fails when the build lost the intrinsic path (e.g. the AVX2 define is missing from the
    /// manifest): the kernels would silently fall back to the slower portable loops.
    func testIntrinsicPathIsCompiledIn() {
        #if AVX2
        XCTAssertEqual(QuantKernels.activePath, .avx2)
        XCTAssertTrue(QuantKernels.availablePaths.contains(.avx2))
        #else
        XCTAssertEqual(QuantKernels.activePath, .portable)
        #endif
        #if arch(x86_64) && os(Linux)
        // Building on an AVX2 machine must define AVX2, and on an AVX-512 VNNI one AVX512VNNI (the
        // int8 kernels' vpdpbusd path): Package.swift reads /proc/cpuinfo. SARVAM_AVX2_ONLY=1 (given
        // to the build and to the test run) builds the AVX2-only kernels on purpose.
        let avx2Only = ProcessInfo.processInfo.environment["SARVAM_AVX2_ONLY"] == "1"
        if let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        {
            let flags = Set(line.split(separator: " "))
            if flags.isSuperset(of: ["avx2", "fma", "f16c"]) {
                XCTAssertEqual(QuantKernels.activePath, .avx2, "this CPU has AVX2 but the AVX2 kernels are not compiled in")
                if flags.isSuperset(of: ["avx512_vnni", "avx512bw"]) && !avx2Only {
                    XCTAssertTrue(QuantKernels.usesVNNI, "this CPU has AVX-512 VNNI but the VNNI kernels are not compiled in")
                }
            }
        }
        #endif
    }

    /// int4 weights take one activation scale per 256 values (a superblock; the row's last block may
    /// be shorter): every group of a block shares it, it is the block's max |x| / 127, and the codes
    /// reproduce x within half a step. Checked against values computed here from x directly.
    func testActivationScalePerSuperblock() {
        var rng = SeededGenerator(seed: 37)
        for cols in [32, 256, 288, 896] {
            let m = 3
            var x = rng.floats(m * cols)
            x[5] = 9  // one large value: its block's scale must follow it, other blocks must not
            let layout = activationLayout(.int4, QuantKernels.activePath, m: m)
            let buffer = UnsafeMutableRawPointer.allocate(
                byteCount: QuantizedActivations.byteCount(m: m, cols: cols, layout: layout), alignment: 64)
            defer { buffer.deallocate() }
            let a = QuantizedActivations(
                m: m, cols: cols, layout: layout, scaleBlock: QuantizedActivations.scaleBlock(for: .int4), buffer: buffer)
            x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, rows: 0..<m) }
            let groups = cols / 32
            for r in 0..<m {
                for g in 0..<groups {
                    let block = g / 8
                    let start = r * cols + block * 256, end = r * cols + min(cols, (block + 1) * 256)
                    let amax = x[start..<end].map { abs($0) }.max()!
                    XCTAssertEqual(a.scales[r * groups + g], amax / 127, accuracy: amax * 1e-6, "row \(r) group \(g)")
                }
                for k in 0..<cols {
                    let step = a.scales[r * groups + k / 32]
                    XCTAssertLessThanOrEqual(abs(Float(a.codes[a.position(r, k)]) * step - x[r * cols + k]), 0.5 * step * 1.0001)
                }
            }
        }
    }

    /// The quantized kernels keep the instructions their comments name (objdump of this test
    /// executable): the byte products and the software prefetch in every tile and decode kernel.
    /// The byte products follow the build: where Package.swift defines AVX512VNNI, the int8 decode
    /// and small-M tiles (`dotBytes`) and the GEMM tiles multiply with `vpdpbusd`; every other
    /// kernel, and those on AVX2-only builds, with `vpmaddubsw` and then `vpmaddwd`, which LLVM fuses with the
    /// `vpaddd` that follows it into `vpdpwssd` when the target has VNNI (so either is accepted).
    /// Losing them silently costs 1.3-40x (docs/kernels.md).
    func testKernelInstructions() throws {
        #if AVX2
        /// Every function whose name holds one of `fragments` exists, contains at least one of the
        /// alternatives of each entry of `instructions`, and none of `absent`.
        func assertKernels(_ fragments: [String], contain instructions: [[String]], lack absent: [String] = []) throws {
            for fragment in fragments {
                let functions = try Disassembly.functions(containing: ["6Tensor", fragment])
                XCTAssertFalse(functions.isEmpty, "no function \(fragment) in this executable")
                for f in functions {
                    for alternatives in instructions {
                        XCTAssertGreaterThan(
                            alternatives.map { f.count($0) }.reduce(0, +), 0,
                            "\(f.name) lost \(alternatives.joined(separator: " / "))")
                    }
                    for instruction in absent { XCTAssertEqual(f.count(instruction), 0, "\(f.name) has \(instruction)") }
                }
            }
        }
        let wordProducts = ["vpmaddwd", "vpdpwssd"]
        let unsignedBytes: [[String]] = [["vpmaddubsw"], wordProducts]
        #if AVX512VNNI
        let int8Bytes: [[String]] = [["vpdpbusd"]]
        let int8Lacks = ["vpmaddubsw"]
        #else
        let int8Bytes = unsignedBytes
        let int8Lacks: [String] = []
        #endif
        // The GEMM tiles multiply broadcast weight codes (vpbroadcastd) with interleaved activations:
        // one vpdpbusd per product on VNNI builds, vpmaddubsw + vpmaddwd elsewhere.
        try assertKernels(
            [
                "19unsignedCodesTiles1", "19unsignedCodesTiles2", "19unsignedCodesTiles4", "14int8GEMMTiles1", "14int8GEMMTiles2",
                "14int8GEMMTiles4",
            ],
            contain: int8Bytes + [["vpbroadcastd"]], lack: int8Lacks)
        #if AVX512VNNI
        // int4/int5 rows two at a time on VNNI builds: each piece of activations loaded into a
        // register once for both rows' vpdpbusd.
        try assertKernels(
            ["23unsignedCodesPairTiles1", "23unsignedCodesPairTiles2", "23unsignedCodesPairTiles4"],
            contain: [["vpdpbusd"], ["vpbroadcastd"]], lack: int8Lacks)
        // ... and the last pair of tiles of an M block (batched decode's 9-16 rows) as one 512-bit vector.
        try assertKernels(["24unsignedCodesPairSixteen"], contain: [["vpdpbusd"], ["vpbroadcastd"], ["zmm"]], lack: int8Lacks)
        // int6 on VNNI builds: vpdpbusd on flipped activations, sub-block scales by vpmulld.
        try assertKernels(
            ["int6VNNIRows1Tiles", "int6VNNIRows2Tiles"], contain: [["vpdpbusd"], ["vpbroadcastd"], ["vpmulld"]],
            lack: int8Lacks + ["vpsignb"])
        try assertKernels(
            ["15int6PairSixteen"], contain: [["vpdpbusd"], ["vpbroadcastd"], ["vpmulld"], ["zmm"]], lack: int8Lacks + ["vpsignb"])
        #endif
        // The int8 GEMM tiles broadcast each Float16 scale with vpbroadcastw + vcvtph2ps: a scalar
        // half converted and broadcast compiled to vpinsrw merging into a live accumulator register
        // (a false dependency from one group's scale to the previous group's sums). (The decode and
        // small-M kernels gather 8 scales into one vector per step instead.)
        let int8Tiles = try Disassembly.functions(containing: ["6Tensor", "int8GEMMTiles"])
        XCTAssertGreaterThanOrEqual(int8Tiles.count, 3, "the int8 GEMM tile kernels are missing from this executable")
        for f in int8Tiles {
            XCTAssertEqual(f.count("vpinsrw"), 0, "\(f.name) builds a scale with vpinsrw again")
            XCTAssertGreaterThan(f.count("vpbroadcastw"), 0, "\(f.name) lost its vpbroadcastw scale")
            XCTAssertGreaterThan(f.count("vcvtph2ps"), 0, "\(f.name) lost its vcvtph2ps scale conversion")
        }
        // int6's GEMM tiles (AVX2-only builds): the int8 sign trick on broadcast codes, Int16 sub-block scales by vpmaddwd.
        try assertKernels(
            ["14int6GEMMTiles1", "14int6GEMMTiles2", "14int6GEMMTiles4"], contain: unsignedBytes + [["vpbroadcastd"], ["vpsignb"]])
        // int6 decode and small-M tiles: unsigned codes, the sub-block sums' offset, prefetch.
        try assertKernels(["9int6Tiles"], contain: unsignedBytes + [["prefetcht0"]])
        // The unpacking (inlined into the GEMM driver) prefetches the rows it reads first.
        try assertKernels(["10gemmBlocks"], contain: [["prefetcht0"]])
        try assertKernels(
            ["16int8RowFunctions", "10int8Decode", "8avx2Int8"], contain: int8Bytes + [["prefetcht0"]],
            lack: int8Lacks)
        try assertKernels(
            ["16int5RowFunctions", "13int5DecodeRow", "9int5Tile8", "16int4RowFunctions", "13int4DecodeRow"],
            contain: unsignedBytes + [["prefetcht0"]])
        // The int4 header is decoded with byte shuffles and one vcvtph2ps (d and dmin together).
        let decode = try Disassembly.functions(containing: ["6Tensor", "13int4DecodeRow"])
        XCTAssertTrue(
            decode.allSatisfy { $0.count("vcvtph2ps") > 0 && $0.count("vpmovzxbd") > 0 },
            "the int4 decode kernel lost its vector header decode")
        // Activation quantization runs on one thread for decode-sized M: it must stay vectorized,
        // without calls to the generic SIMD library (pointwiseMax, lowHalf, ... are not inlined).
        let quantize = try Disassembly.functions(containing: ["6Tensor", "20QuantizedActivationsV8quantize_4rows"])
        XCTAssertFalse(quantize.isEmpty, "no QuantizedActivations.quantize(_:rows:) in this executable")
        for f in quantize {
            XCTAssertGreaterThan(f.count("vcvtps2dq"), 0, "quantize lost vcvtps2dq")
            XCTAssertGreaterThan(f.count("vmaxps"), 0, "quantize lost vmaxps")
            XCTAssertEqual(
                f.count("call"), 0,
                "quantize calls out of line:\n\(f.body.split(separator: "\n").filter { $0.contains("call") }.joined(separator: "\n"))")
        }
        let int8 = try Disassembly.functions(containing: ["6Tensor", "10int8Decode"])
            + Disassembly.functions(containing: ["6Tensor", "16int8RowFunctions"])
        XCTAssertTrue(
            int8.allSatisfy { $0.count("prefetcht0") > 0 && $0.count("vphaddd") > 0 },
            "the int8 decode or small-M kernels lost their prefetch or their vphaddd reduction")
        #else
        throw XCTSkip(
            "built without AVX2 (Package.swift defines it only where /proc/cpuinfo lists avx2, fma and f16c): no intrinsic kernels to check"
        )
        #endif
    }

    /// Activation codes land where `position` says, in every layout, with the same values; the
    /// interleaved layout's padding rows (past M in the last tile of 8) are zero.
    func testActivationLayouts() {
        var rng = SeededGenerator(seed: 31)
        for cols in [32, 96, 288] {
            for m in [2, 11] {
                let x = rng.floats(m * cols)
                var natural: [Int8] = []
                for layout in [QuantizedActivations.Layout.natural, .pairedHalves, .interleavedRows] {
                    let bytes = QuantizedActivations.byteCount(m: m, cols: cols, layout: layout)
                    let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
                    defer { buffer.deallocate() }
                    buffer.initializeMemory(as: UInt8.self, repeating: 0x5A, count: bytes)  // quantize must clear the padding
                    let a = QuantizedActivations(m: m, cols: cols, layout: layout, buffer: buffer)
                    x.withUnsafeBufferPointer { a.quantize($0.baseAddress!, rows: 0..<m) }
                    var values: [Int8] = []
                    for r in 0..<m { for k in 0..<cols { values.append(a.codes[a.position(r, k)]) } }
                    let positions = Set((0..<m).flatMap { r in (0..<cols).map { a.position(r, $0) } })
                    XCTAssertEqual(positions.count, m * cols, "positions must be a permutation")
                    if layout == .natural { natural = values } else { XCTAssertEqual(values, natural, "\(layout) cols \(cols) m \(m)") }
                    if layout == .natural {
                        // Codes reproduce x within half a step per group.
                        for r in 0..<m {
                            for k in 0..<cols {
                                let s = a.scales[r * (cols / 32) + k / 32]
                                XCTAssertLessThanOrEqual(abs(Float(a.codes[r * cols + k]) * s - x[r * cols + k]), 0.5 * s * 1.0001)
                            }
                        }
                    }
                    if layout == .interleavedRows {
                        // Tile 1's piece for k = 0...3 holds row 9's codes at 4·(9 % 8).
                        XCTAssertEqual(a.position(9, 2), 8 * cols + 4 + 2)
                        for r in m..<(m + 7) / 8 * 8 {
                            for k in 0..<cols { XCTAssertEqual(a.codes[a.position(r, k)], 0, "padding row \(r) k \(k)") }
                        }
                    }
                }
            }
        }
    }
}
