// `bench kernels [--json] [--threads N] [--large-m] [--quick] [--prefetch-sweep] [--cpu-time] [--float-only]`
//
// Measures, for 1 and 2 threads (or only N with --threads N):
//   - memory read bandwidth (streaming a 512 MB buffer, far larger than the caches);
//   - int8 / int5 / int4 matrix-vector over the default model's shapes, in GB/s of weight bytes and as a
//     fraction of the bandwidth measured in the same run;
//   - a sweep over all 24 layers' matrices (allocated separately, ~380 / ~250 / ~200 MB int8 / int5 / int4, so
//     nothing stays cached): one token of decode; GB/s, fraction, and effective GOP/s
//     (2·N·K·M / time) at M = 1, 4, 8, 16 (and 64, 512 with --large-m); from M = 16 on (the AVX2
//     GEMM kernels) also the same sweep on the small-M tiles, as a ratio ("1.40x tiles");
//   - f32/f16 weights through the own float path and through OpenBLAS's sgemm at M = 1 ... 512
//     (KernelsBench+Float.swift; `--float-only` runs only this section).
// Every kernel result is checked against the reference before it is timed; times are medians.
// With --json the last line is one JSON object for the largest thread count.
import ArgumentParser
import Foundation
import Tensor
#if canImport(Glibc)
import Glibc
#endif

enum KernelsBench {
    struct Options: ParsableArguments {
        @Flag(help: "Print one JSON object with every figure of the largest thread count as the last line.")
        var json = false
        @Option(parsing: .unconditional, help: "Measure with N threads only (default: 1, then every core, at least 2).")
        var threads: Int?
        @Flag(name: .customLong("large-m"), help: "Add M = 64 and 512 activation rows to the layer sweep.")
        var largeM = false
        @Flag(help: "3 repeats per measurement instead of 7.")
        var quick = false
        @Flag(name: .customLong("prefetch-sweep"), help: "Only compare software prefetch distances on the M = 1 sweep.")
        var prefetchSweep = false
        /// Time with the process's CPU clock instead of the wall clock (with --threads 1 this is
        /// throughput per CPU-second: comparable between runs on a machine busy with other work).
        @Flag(name: .customLong("cpu-time"), help: "Time with the process's CPU clock (per CPU-second figures on a busy machine).")
        var cpuTime = false
        @Flag(name: .customLong("float-only"), help: "Only the float section (f32/f16 own path vs sgemm); skips the quantized weights.")
        var floatOnly = false

        var threadCounts: [Int] { threads.map { [$0] } ?? [1, max(2, ProcessInfo.processInfo.activeProcessorCount)] }

        func validate() throws {
            if let threads, threads < 1 { throw ValidationError("--threads: expected a positive integer, found \(threads)") }
        }
    }

    struct BenchError: Error, CustomStringConvertible {
        let description: String
    }

    // Model shapes (rows N × cols K) of the default model (Qwen2.5-Coder 0.5B).
    static let shapes: [(name: String, rows: Int, cols: Int)] = [
        ("896x896", 896, 896), ("128x896", 128, 896), ("4864x896", 4864, 896), ("896x4864", 896, 4864),
        ("151936x896", 151_936, 896),
    ]
    // One layer's matrices: q, k, v, o, gate, up, down.
    static let layer: [(rows: Int, cols: Int)] = [(896, 896), (128, 896), (128, 896), (896, 896), (4864, 896), (4864, 896), (896, 4864)]
    static let layers = 24

    static func run(_ options: Options) throws {
        useCPUClock = options.cpuTime
        let repeats = options.quick ? 3 : 7
        var rng = SplitMix(seed: 42)
        var json: [String: Any] = [:]

        let floatInputs = prepareFloat(rng: &rng)
        try checkFloat(floatInputs, pool: ThreadPool(threads: 2))
        log("both float methods match the exact product", options)
        if options.floatOnly {
            for threads in options.threadCounts {
                print("== \(threads) thread\(threads == 1 ? "" : "s") ==")
                json = measureFloat(floatInputs, pool: ThreadPool(threads: threads), repeats: repeats)
                json["threads"] = threads
            }
            if options.json {
                print(String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self))
            }
            return
        }

        // Quantize each distinct shape once, then copy into separate allocations for the sweep.
        let formats: [WeightFormat] = [.int8, .int5, .int4]
        var shapeMatrices: [WeightFormat: [String: QuantizedMatrix]] = [:]
        var sweep: [WeightFormat: [QuantizedMatrix]] = [:]
        log("preparing weights (\(shapes.count) shapes, sweep of \(layers) layers)...", options)
        for format in formats {
            var byShape: [String: QuantizedMatrix] = [:]
            for s in shapes {
                byShape[s.name] = randomMatrix(rows: s.rows, cols: s.cols, format: format, rng: &rng)
            }
            shapeMatrices[format] = byShape
            var all: [QuantizedMatrix] = []
            for _ in 0..<layers {
                for m in layer { all.append(copy(byShape["\(m.rows)x\(m.cols)"]!)) }
            }
            sweep[format] = all
        }
        let sweepWeights = layer.reduce(0) { $0 + $1.rows * $1.cols } * layers
        let maxCols = 4864
        let maxM = options.largeM ? 512 : 16
        var x = [Float](repeating: 0, count: maxM * maxCols)
        for i in 0..<x.count { x[i] = rng.nextFloat() * 2 - 1 }
        let y = UnsafeMutablePointer<Float>.allocate(capacity: maxM * 151_936)
        defer { y.deallocate() }

        // Check every kernel shape against the reference first (one pool of 2 threads, M = 1 and 5).
        let checkPool = ThreadPool(threads: 2)
        for format in formats {
            for s in shapes where s.rows <= 4864 {
                for m in [1, 5, 16] {
                    try check(shapeMatrices[format]![s.name]!, x: x, m: m, pool: checkPool, label: "\(format) \(s.name) M=\(m)")
                }
            }
            // The vocabulary matrix: M = 1 only (the reference is slow).
            try check(shapeMatrices[format]!["151936x896"]!, x: x, m: 1, pool: checkPool, label: "\(format) 151936x896 M=1")
        }
        log("all kernels match the reference", options)

        // The machines are shared: record how busy this one was, to judge the numbers below.
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.flatMap { Double($0) }
        if let load { print(String(format: "load average %.2f on %d cores", load, ProcessInfo.processInfo.activeProcessorCount)) }

        if options.prefetchSweep {
            prefetchSweep(sweep: sweep, x: x, y: y, threads: options.threadCounts.last!)
            return
        }
        for threads in options.threadCounts {
            let pool = ThreadPool(threads: threads)
            print("== \(threads) thread\(threads == 1 ? "" : "s") (kernel path \(QuantKernels.activePath.rawValue)) ==")
            let bandwidth = measureBandwidth(pool: pool, repeats: repeats)
            print(String(format: "memory read bandwidth          %7.1f GB/s", bandwidth))
            var record: [String: Any] = [
                "threads": threads, "bandwidth_gbs": round2(bandwidth),
                "kernel_path": QuantKernels.activePath.rawValue + (QuantKernels.usesVNNI ? "+vnni" : ""),
            ]
            if let load { record["load_average"] = load }

            print("matrix-vector (M = 1)  " + formats.map { "          \($0) GB/s  frac" }.joined())
            for s in shapes {
                var line = "  " + s.name.padding(toLength: 12, withPad: " ", startingAt: 0)
                for format in formats {
                    let w = shapeMatrices[format]![s.name]!
                    let t = time(repeats: repeats, minimumSeconds: 0.02) {
                        x.withUnsafeBufferPointer { quantizedMatmul(w, $0.baseAddress!, m: 1, y, pool: pool) }
                    }
                    let gbs = Double(w.byteCount) / t / 1e9
                    line += String(format: "              %7.1f  %4.2f", gbs, gbs / bandwidth)
                    record["\(format)_\(s.name)_gbs"] = round2(gbs)
                }
                print(line)
            }

            let ms = [1, 4, 8, 16] + (options.largeM ? [64, 512] : [])
            print("layer sweep (\(layers) layers, \(sweepWeights / 1_000_000) M weights)")
            print("      M" + formats.map { "   \($0) ms   GB/s  frac   GOP/s " }.joined())
            for m in ms {
                var line = String(format: "  %5d", m)
                for format in formats {
                    let matrices = sweep[format]!
                    let bytes = matrices.reduce(0) { $0 + $1.byteCount }
                    let t = time(repeats: m >= 64 ? min(repeats, 3) : repeats, minimumSeconds: 0) {
                        x.withUnsafeBufferPointer { xp in
                            for w in matrices { quantizedMatmul(w, xp.baseAddress!, m: m, y, pool: pool) }
                        }
                    }
                    let gbs = Double(bytes) / t / 1e9
                    let gops = 2 * Double(sweepWeights) * Double(m) / t / 1e9
                    line += String(format: "   %7.2f %6.1f  %4.2f  %6.1f ", t * 1e3, gbs, gbs / bandwidth, gops)
                    if m >= QuantKernels.gemmMinimumRows && QuantKernels.activePath == .avx2 {
                        // The same sweep on the small-M tiles, right after: the GEMM kernels' gain in this run.
                        let gemmRows = QuantKernels.gemmMinimumRows
                        QuantKernels.gemmMinimumRows = Int.max
                        let tiles = time(repeats: m >= 64 ? min(repeats, 3) : repeats, minimumSeconds: 0) {
                            x.withUnsafeBufferPointer { xp in
                                for w in matrices { quantizedMatmul(w, xp.baseAddress!, m: m, y, pool: pool) }
                            }
                        }
                        QuantKernels.gemmMinimumRows = gemmRows
                        line += String(format: "(%.2fx tiles) ", tiles / t)
                        record["\(format)_m\(m)_gemm_vs_tiles"] = round2(tiles / t)
                    }
                    if m == 1 {
                        record["\(format)_sweep_gbs"] = round2(gbs)
                        record["\(format)_sweep_fraction"] = round3(gbs / bandwidth)
                        record["\(format)_sweep_ms"] = round3(t * 1e3)
                    }
                    record["\(format)_m\(m)_gops"] = round2(gops)
                }
                print(line)
            }

            record.merge(measureFloat(floatInputs, pool: pool, repeats: repeats)) { $1 }
            json = record
        }
        if options.json {
            let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// The M = 1 layer sweep at several prefetch distances, interleaved round by round so that a
    /// busy machine slows every distance alike; prints medians and the ratio to no prefetching.
    static func prefetchSweep(sweep: [WeightFormat: [QuantizedMatrix]], x: [Float], y: UnsafeMutablePointer<Float>, threads: Int) {
        let pool = ThreadPool(threads: threads)
        let distances = [0, 256, 512, 1024, 2048, 4096]
        var samples: [WeightFormat: [Int: [Double]]] = [:]
        for _ in 0..<7 {
            for d in distances {
                QuantKernels.decodePrefetchDistance = d
                for format in [WeightFormat.int8, .int4] {
                    let t = time(repeats: 1, minimumSeconds: 0) {
                        x.withUnsafeBufferPointer { xp in
                            for w in sweep[format]! { quantizedMatmul(w, xp.baseAddress!, m: 1, y, pool: pool) }
                        }
                    }
                    samples[format, default: [:]][d, default: []].append(t)
                }
            }
        }
        print("prefetch distance sweep (M = 1, \(threads) threads): median ms, speed vs no prefetch")
        for format in [WeightFormat.int8, .int4] {
            let base = median(samples[format]![0]!)
            var line = "  \(format)"
            for d in distances {
                let t = median(samples[format]![d]!)
                line += String(format: "   %d: %.2f ms %.2fx", d, t * 1e3, base / t)
            }
            print(line)
        }
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    // MARK: - Pieces

    static func log(_ message: String, _ options: Options) {
        FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
    }

    static func round2(_ v: Double) -> Double { (v * 100).rounded() / 100 }
    static func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }

    nonisolated(unsafe) static var useCPUClock = false

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(useCPUClock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Median seconds per call of `body` over `repeats` measurements, each repeating the call until
    /// `minimumSeconds` have passed (short calls are otherwise dominated by timer noise).
    static func time(repeats: Int, minimumSeconds: Double, _ body: () -> Void) -> Double {
        body()  // warm up (page in, wake the pool)
        var samples: [Double] = []
        for _ in 0..<repeats {
            var calls = 0
            let start = now()
            var elapsed = 0.0
            repeat {
                body()
                calls += 1
                elapsed = now() - start
            } while elapsed < minimumSeconds
            samples.append(elapsed / Double(calls))
        }
        samples.sort()
        return samples[samples.count / 2]
    }

    /// Read bandwidth: every thread sums its share of a 512 MB buffer with 4 independent 16-lane
    /// accumulators (the loads, not the adds, are the limit).
    static func measureBandwidth(pool: ThreadPool, repeats: Int) -> Double {
        let count = 128 * 1024 * 1024  // floats = 512 MB
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        pool.parallelFor(count, alignment: 4096) { _, range in
            for i in range { buffer[i] = Float(i & 1023) * 1e-3 }
        }
        let sink = UnsafeMutablePointer<Float>.allocate(capacity: 64 * pool.threads)
        defer { sink.deallocate() }
        let t = time(repeats: repeats, minimumSeconds: 0) {
            pool.parallelFor(count, alignment: 4096) { thread, range in
                let raw = UnsafeRawPointer(buffer)
                var a0 = SIMD16<Float>(), a1 = a0, a2 = a0, a3 = a0
                var i = range.lowerBound
                while i + 64 <= range.upperBound {
                    a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                    a1 += raw.loadUnaligned(fromByteOffset: i * 4 + 64, as: SIMD16<Float>.self)
                    a2 += raw.loadUnaligned(fromByteOffset: i * 4 + 128, as: SIMD16<Float>.self)
                    a3 += raw.loadUnaligned(fromByteOffset: i * 4 + 192, as: SIMD16<Float>.self)
                    i += 64
                }
                sink[thread * 64] = (a0 + a1 + a2 + a3).sum()
            }
        }
        return Double(count * 4) / t / 1e9
    }

    static func randomMatrix(rows: Int, cols: Int, format: WeightFormat, rng: inout SplitMix) -> QuantizedMatrix {
        if format == .int4 {
            // Random valid superblocks straight away (kernel speed does not depend on the values, and
            // the error-minimizing int4 quantizer would spend minutes on these 650 M weights).
            let storage = QuantizedStorage(byteCount: format.bytesPerRow(cols: cols) * rows)
            let rowBytes = format.bytesPerRow(cols: cols)
            for i in stride(from: 0, to: rowBytes * rows - 7, by: 8) {
                storage.bytes.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
            }
            for r in 0..<rows {
                var offset = r * rowBytes
                while offset < (r + 1) * rowBytes {
                    // d, dmin: small positive halves, as quantized weights of magnitude ~0.05 have.
                    storage.bytes.storeBytes(
                        of: floatToFloat16(0.0005 + 0.0005 * rng.nextFloat()), toByteOffset: offset + Int4Superblock.dOffset,
                        as: UInt16.self)
                    storage.bytes.storeBytes(
                        of: floatToFloat16(0.0005 + 0.0005 * rng.nextFloat()), toByteOffset: offset + Int4Superblock.dminOffset,
                        as: UInt16.self)
                    offset += Int4Superblock.bytes
                }
            }
            return QuantizedMatrix(format: format, rows: rows, cols: cols, data: UnsafeRawPointer(storage.bytes), owner: storage)
        }
        var w = [Float](repeating: 0, count: rows * cols)
        for i in 0..<w.count { w[i] = (rng.nextFloat() * 2 - 1) * 0.05 }
        return w.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
    }

    /// A separately allocated copy (the sweep must not reuse cached bytes).
    static func copy(_ w: QuantizedMatrix) -> QuantizedMatrix {
        let storage = QuantizedStorage(byteCount: w.byteCount)
        storage.bytes.copyMemory(from: w.data, byteCount: w.byteCount)
        return QuantizedMatrix(format: w.format, rows: w.rows, cols: w.cols, data: UnsafeRawPointer(storage.bytes), owner: storage)
    }

    /// The kernel against the reference on the same activations; tolerance as in the tests
    /// (Float32 rounding of the per-group scaling only).
    static func check(_ w: QuantizedMatrix, x: [Float], m: Int, pool: ThreadPool, label: String) throws {
        var got = [Float](repeating: .nan, count: m * w.rows), want = got
        x.withUnsafeBufferPointer { xp in
            got.withUnsafeMutableBufferPointer { quantizedMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pool) }
            want.withUnsafeMutableBufferPointer { quantizedMatmulReference(w, xp.baseAddress!, m: m, $0.baseAddress!) }
        }
        var scale: Float = 0
        for v in want { scale = max(scale, abs(v)) }
        let tolerance = Float(w.cols / 32 + 8) * 4 / Float(1 << 23) * max(scale, 1) * 8
        for i in 0..<got.count where !(abs(got[i] - want[i]) <= tolerance) {
            throw BenchError(description: "\(label): kernel differs from reference at \(i): \(got[i]) vs \(want[i])")
        }
    }

    /// SplitMix64, so the bench draws the same numbers each run (bench cannot use TestSupport).
    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func nextFloat() -> Float { Float(next() >> 40) / Float(1 << 24) }
    }
}
