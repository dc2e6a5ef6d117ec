// `bench kernels`' float section: f32 and f16 weights through the own path and through OpenBLAS's
// sgemm (FloatMatmul.swift) at M = 1 ... 512 activation rows. The matrices of `floatLayers` layers
// of the default model are allocated separately (f32 ~240 MB, f16 ~120 MB: nothing stays in the
// 32 MB L3, as in a forward pass) and swept in model order (q, k, v, o, gate, up, down); each call is
// timed, and per shape the table gives ms per call, GFLOP/s and own / sgemm (> 1: sgemm is faster),
// then the same for one whole layer. The smallest M from which sgemm wins the layer at every larger M
// measured is what `FloatKernels.sgemmMinimumRows` should be. Also one 512-row call on OpenBLAS's
// own threads against the split over our pool (why the float path keeps OpenBLAS on one thread).
import Foundation
import Tensor

extension KernelsBench {
    /// The default model's matrix shapes, and one layer's matrices in order (indices into them).
    static let floatShapes: [(name: String, rows: Int, cols: Int)] = [
        ("896x896", 896, 896), ("128x896", 128, 896),
        ("4864x896", 4864, 896), ("896x4864", 896, 4864),
    ]
    static let floatLayer = [0, 1, 1, 0, 2, 2, 3]
    static let floatLayers = 4
    static let floatRows = [1, 4, 8, 16, 32, 64, 512]

    /// Random f32 and f16 matrices (|w| ≤ 0.05): one per shape (checked), and `floatLayers` layers of
    /// separate copies (timed); activations x [512, 4864] in [-1, 1].
    struct FloatInputs {
        var matrices: [WeightFormat: [String: QuantizedMatrix]] = [:]
        var sweep: [WeightFormat: [QuantizedMatrix]] = [:]
        var x: [Float] = []
    }

    static func prepareFloat(rng: inout SplitMix) -> FloatInputs {
        var inputs = FloatInputs()
        for s in floatShapes {
            var w = [Float](repeating: 0, count: s.rows * s.cols)
            for i in 0..<w.count { w[i] = (rng.nextFloat() * 2 - 1) * 0.05 }
            for format in [WeightFormat.f32, .f16] {
                inputs.matrices[format, default: [:]][s.name] = w.withUnsafeBufferPointer {
                    QuantizedMatrix.quantize($0.baseAddress!, rows: s.rows, cols: s.cols, format: format)
                }
            }
        }
        for format in [WeightFormat.f32, .f16] {
            inputs.sweep[format] = (0..<floatLayers).flatMap { _ in floatLayer.map { copy(inputs.matrices[format]![floatShapes[$0].name]!) }
            }
        }
        inputs.x = (0..<floatRows.max()! * 4864).map { _ in rng.nextFloat() * 2 - 1 }
        return inputs
    }

    /// Both methods against a Double-summed product at M = 5 and 17 on every shape and format: any
    /// summation order of K Float32 products is within K · 2^-24 · Σ|w·x| of the exact sum.
    static func checkFloat(_ inputs: FloatInputs, pool: ThreadPool) throws {
        for (format, byShape) in inputs.matrices {
            for (name, w) in byShape {
                for m in [5, 17] {
                    var exact = [Double](repeating: 0, count: m * w.rows), magnitude = exact
                    var row = [Float](repeating: 0, count: w.cols)
                    for n in 0..<w.rows {
                        row.withUnsafeMutableBufferPointer { w.dequantizeRow(n, into: $0.baseAddress!) }
                        for mi in 0..<m {
                            for k in 0..<w.cols {
                                let p = Double(row[k]) * Double(inputs.x[mi * w.cols + k])
                                exact[mi * w.rows + n] += p
                                magnitude[mi * w.rows + n] += abs(p)
                            }
                        }
                    }
                    for method in FloatKernels.Method.allCases {
                        var got = [Float](repeating: .nan, count: m * w.rows)
                        inputs.x.withUnsafeBufferPointer { xp in
                            got.withUnsafeMutableBufferPointer {
                                floatMatmul(w, xp.baseAddress!, m: m, $0.baseAddress!, pool: pool, method: method)
                            }
                        }
                        let bound = Double(w.cols) * 0x1p-24
                        for i in got.indices where !(abs(Double(got[i]) - exact[i]) <= bound * magnitude[i] + 1e-6) {
                            throw BenchError(
                                description: "float \(format) \(name) M=\(m) \(method): y[\(i)] = \(got[i]), exact \(exact[i])")
                        }
                    }
                }
            }
        }
    }

    /// The float table for one pool; returns its JSON fields.
    static func measureFloat(_ inputs: FloatInputs, pool: ThreadPool, repeats: Int) -> [String: Any] {
        var record: [String: Any] = [:]
        let y = UnsafeMutablePointer<Float>.allocate(capacity: floatRows.max()! * 4864)
        defer { y.deallocate() }
        /// Seconds per sweep spent on each shape, median over the sweeps (after one warm-up sweep).
        func sweep(_ format: WeightFormat, m: Int, _ method: FloatKernels.Method) -> [Double] {
            var samples = [[Double]](repeating: [], count: floatShapes.count)
            for round in 0...(m >= 64 ? min(repeats, 3) : repeats) {
                var perShape = [Double](repeating: 0, count: floatShapes.count)
                inputs.x.withUnsafeBufferPointer { xp in
                    for (i, w) in inputs.sweep[format]!.enumerated() {
                        let start = now()
                        floatMatmul(w, xp.baseAddress!, m: m, y, pool: pool, method: method)
                        perShape[floatLayer[i % floatLayer.count]] += now() - start
                    }
                }
                if round > 0 { for s in perShape.indices { samples[s].append(perShape[s]) } }
            }
            return samples.map(median)
        }
        print(
            "float matmul, \(floatLayers) layers swept from memory: own path vs OpenBLAS sgemm (ms per call, GFLOP/s; own/sgemm > 1: sgemm faster)"
        )
        print("  format shape           M    own ms  GFLOP/s   sgemm ms  GFLOP/s   own/sgemm")
        for format in [WeightFormat.f32, .f16] {
            var crossover = 0
            for m in floatRows {
                let own = sweep(format, m: m, .own), sgemm = sweep(format, m: m, .sgemm)
                func line(_ name: String, calls: Int, flops: Double, own: Double, sgemm: Double) {
                    print(
                        String(
                            format: "  %@    %@ %5d  %8.3f  %7.1f   %8.3f  %7.1f   %9.2f", format.rawValue as NSString,
                            name.padding(toLength: 12, withPad: " ", startingAt: 0) as NSString, m,
                            own / Double(calls) * 1e3, flops * Double(calls) / own / 1e9,
                            sgemm / Double(calls) * 1e3, flops * Double(calls) / sgemm / 1e9, own / sgemm))
                }
                for (i, s) in floatShapes.enumerated() {
                    let calls = floatLayers * floatLayer.filter { $0 == i }.count
                    line(s.name, calls: calls, flops: 2 * Double(m * s.rows * s.cols), own: own[i], sgemm: sgemm[i])
                    record["float_\(format)_\(s.name)_m\(m)_own_ms"] = round3(own[i] / Double(calls) * 1e3)
                    record["float_\(format)_\(s.name)_m\(m)_sgemm_ms"] = round3(sgemm[i] / Double(calls) * 1e3)
                }
                let layerOwn = own.reduce(0, +), layerSgemm = sgemm.reduce(0, +)
                let layerFlops = 2 * Double(m * floatLayer.reduce(0) { $0 + floatShapes[$1].rows * floatShapes[$1].cols })
                line("one layer", calls: floatLayers, flops: layerFlops, own: layerOwn, sgemm: layerSgemm)
                record["float_\(format)_layer_m\(m)_own_over_sgemm"] = round2(layerOwn / layerSgemm)
                if layerSgemm < layerOwn {
                    if crossover == 0 { crossover = m }
                } else {
                    crossover = 0
                }
            }
            print(
                "  \(format): sgemm faster on one layer from M = \(crossover == 0 ? "-" : "\(crossover)") on (of \(floatRows)); the float path switches at M = \(FloatKernels.sgemmMinimumRows)"
            )
            record["float_\(format)_sgemm_from_m"] = crossover
        }

        // One 512-row call on OpenBLAS's own threads (from this thread) against the split over the pool.
        if pool.threads > 1 {
            let w = inputs.matrices[.f32]!["4864x896"]!
            let split = time(repeats: min(repeats, 3), minimumSeconds: 0.02) {
                inputs.x.withUnsafeBufferPointer { floatMatmul(w, $0.baseAddress!, m: 512, y, pool: pool, method: .sgemm) }
            }
            BLAS.threadCount = pool.threads
            let own = time(repeats: min(repeats, 3), minimumSeconds: 0.02) {
                inputs.x.withUnsafeBufferPointer {
                    BLAS.matmulTransposedB($0.baseAddress!, w.data.assumingMemoryBound(to: Float.self), y, m: 512, n: w.rows, k: w.cols)
                }
            }
            BLAS.threadCount = 1
            let flops = 2 * Double(512 * w.rows * w.cols)
            print(
                String(
                    format:
                        "  sgemm f32 4864x896 M=512: split over our %d threads %.1f GFLOP/s, one call on OpenBLAS's %d threads %.1f GFLOP/s",
                    pool.threads, flops / split / 1e9, pool.threads, flops / own / 1e9))
            record["float_sgemm_split_gflops"] = round2(flops / split / 1e9)
            record["float_sgemm_openblas_threads_gflops"] = round2(flops / own / 1e9)
        }
        return record
    }
}
