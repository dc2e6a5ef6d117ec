import Foundation

// Elementwise and reduction ops of a Llama-family forward pass, on raw pointers.
//
// Each op has a plain `…Reference` twin in Ops+Reference.swift that the tests compare against.
// Contracts shared by all: pointers to `count` Floats (or the stated shapes), nothing allocated on
// the heap inside, outputs may alias inputs element for element (out == a is fine) unless stated.
// Shape letters: D = vector length (`count`), H = heads, Dh = head dimension.
//
// Reductions (dot, sum of squares, softmax sum) accumulate in SIMD8<Float> lanes (vfmadd231ps /
// vaddps ymm) because LLVM never reorders a scalar float sum by itself; the elementwise loops are
// plain loops that LLVM vectorizes (vaddps / vmulps / vfmadd ymm), and the transcendental ones use
// `vectorExp8` (VectorMath.swift) instead of per-element libm calls.
public enum Ops {
    /// How RoPE pairs up the dimensions of one head vector of size Dh.
    public enum RopeLayout: String, Sendable, Codable, CaseIterable {
        /// Pairs (x[2i], x[2i+1]): Meta's Llama and GGUF llama files (which permute q/k rows).
        case interleaved
        /// Pairs (x[i], x[i + Dh/2]): GPT-NeoX, Qwen2 and Hugging Face `rotate_half`.
        case halves
    }

    // MARK: Normalization

    /// out[D] = x / sqrt(mean(x²) + epsilon) * weight. `out` may be `x`. The sum of squares is a
    /// blocked sum: Float vector lanes within blocks of 256 elements (8 terms per lane, then a
    /// pairwise lane sum), block sums added in Double, so the Float rounding error stays that of a
    /// 256-term sum whatever D is (896..8192 here). Vector loop: vfmadd231ps ymm.
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int, epsilon: Float
    ) {
        precondition(count > 0, "rmsNorm of an empty vector")
        let sum = sumOfSquares(x, count: count)
        let scale = Float(1.0 / (sum / Double(count) + Double(epsilon)).squareRoot())
        // Same order as Hugging Face: (x * scale) * weight.
        for i in 0..<count {
            out[i] = (x[i] * scale) * weight[i]
        }
    }

    /// Σ x² over `count` elements: 8 lanes x 4 accumulators (FMA latency) in Float per block of 256,
    /// blocks summed in Double.
    @inline(__always)
    static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var total = 0.0
        var start = 0
        while start < count {
            let end = min(start + 256, count)
            var a0 = FloatVector8(), a1 = FloatVector8(), a2 = FloatVector8(), a3 = FloatVector8()
            var i = start
            while i + 32 <= end {
                let v0 = vectorLoad8(x + i), v1 = vectorLoad8(x + i + 8), v2 = vectorLoad8(x + i + 16), v3 = vectorLoad8(x + i + 24)
                a0.addProduct(v0, v0); a1.addProduct(v1, v1); a2.addProduct(v2, v2); a3.addProduct(v3, v3)
                i += 32
            }
            while i + 8 <= end {
                let v = vectorLoad8(x + i)
                a0.addProduct(v, v)
                i += 8
            }
            if i < end {
                let v = vectorLoadPartial(x + i, end - i)
                a1.addProduct(v, v)
            }
            total += Double(vectorLaneSum((a0 + a1) + (a2 + a3)))
            start = end
        }
        return total
    }

    // MARK: Rotary position embedding

    /// Rotates H = `heads` consecutive head vectors of Dh = `headDim` floats in place for token
    /// position `position`: pair i (0 ..< Dh/2) turns by angle position * theta^(-2i/Dh),
    /// (a, b) -> (a cos - b sin, a sin + b cos), pairs chosen by `layout`.
    ///
    /// Precision: frequencies and angles are computed in Double and cos/sin evaluated in Double,
    /// then rounded to Float (so the rotation coefficients are correctly rounded up to 1 ulp). A
    /// Float angle would be off by up to position * ulp(freq) ≈ 2e-3 rad at position 32768 (that is
    /// what Hugging Face's float32 `inv_freq * t` does; we prefer the exact value). The Dh/2 cos/sin
    /// pairs are computed once per call, shared by all heads, into a stack buffer; the frequencies
    /// come from a Double recurrence freq_{i+1} = freq_i * theta^(-2/Dh) (one pow per call, relative
    /// error ~i * 1e-16, i.e. < 1e-10 rad at position 32768).
    public static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float, layout: RopeLayout) {
        precondition(headDim > 0 && headDim % 2 == 0, "rope needs an even head dimension, got \(headDim)")
        precondition(heads >= 0 && position >= 0, "rope: heads \(heads), position \(position)")
        let half = headDim / 2
        withUnsafeTemporaryAllocation(of: Float.self, capacity: headDim) { buffer in
            let cosines = buffer.baseAddress!
            let sines = cosines + half
            let step = pow(Double(theta), -2.0 / Double(headDim))
            var freq = 1.0
            let p = Double(position)
            for i in 0..<half {
                let angle = p * freq
                cosines[i] = Float(cos(angle))
                sines[i] = Float(sin(angle))
                freq *= step
            }
            switch layout {
            case .halves:
                // Contiguous halves: this loop vectorizes (vmulps / vsubps / vaddps on ymm).
                for h in 0..<heads {
                    let lo = x + h * headDim
                    let hi = lo + half
                    for i in 0..<half {
                        let a = lo[i], b = hi[i], c = cosines[i], s = sines[i]
                        lo[i] = a * c - b * s
                        hi[i] = a * s + b * c
                    }
                }
            case .interleaved:
                // Vectorizes too, with shuffles (vshufps / vpermpd) to split and merge the pairs.
                for h in 0..<heads {
                    let v = x + h * headDim
                    for i in 0..<half {
                        let a = v[2 * i], b = v[2 * i + 1], c = cosines[i], s = sines[i]
                        v[2 * i] = a * c - b * s
                        v[2 * i + 1] = a * s + b * c
                    }
                }
            }
        }
    }

    // MARK: Softmax and activations

    /// In place x[i] = e^(x[i] - shift) over `count` floats with the 8-lane polynomial exp, returning
    /// their sum (attention's tile of scores with the row's running maximum as `shift`, so the
    /// arguments are <= 0). The sum is accumulated in 8 lanes and added pairwise at the end.
    @discardableResult
    public static func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        let s = FloatVector8(repeating: shift)
        var acc = FloatVector8()
        var i = 0
        // One call site of vectorExp8 (see softmax); a partial last vector pads with -inf (exp 0).
        while i < count {
            let n = min(8, count - i)
            let e = vectorExp8((n == 8 ? vectorLoad8(x + i) : vectorLoadPartial(x + i, n, fill: -.infinity)) - s)
            if n == 8 { vectorStore8(e, x + i) } else { vectorStorePartial(e, x + i, n) }
            acc += e
            i += n
        }
        return vectorLaneSum(acc)
    }

    /// In-place softmax over `count` floats, stable: subtracts the maximum first so exp never
    /// overflows (inputs of magnitude 1e4 are fine). The sum is accumulated like `rmsNorm`'s. A row
    /// that is all -inf (nothing to attend to) has no distribution and gives NaN, as the reference.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count > 0, "softmax of an empty vector")
        let m = maximum(x, count: count)
        let mv = FloatVector8(repeating: m)
        var total = 0.0
        var start = 0
        while start < count {
            let end = min(start + 256, count)
            var acc = FloatVector8()
            var i = start
            // One call site of vectorExp8 (with two, the inliner kept it out of line); a partial
            // last block pads with -inf, whose exp is 0, so padding adds nothing to the sum.
            while i < end {
                let n = min(8, end - i)
                let v = n == 8 ? vectorLoad8(x + i) : vectorLoadPartial(x + i, n, fill: -.infinity)
                let e = vectorExp8(v - mv)
                if n == 8 { vectorStore8(e, x + i) } else { vectorStorePartial(e, x + i, n) }
                acc += e
                i += n
            }
            total += Double(vectorLaneSum(acc))
            start = end
        }
        let inverse = Float(1.0 / total)
        for i in 0..<count { x[i] *= inverse }
    }

    /// Largest element (NaN ignored unless all are NaN: then -inf). vmaxps-style blend per 8 lanes.
    @inline(__always)
    public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc = FloatVector8(repeating: -.infinity)
        var i = 0
        while i + 8 <= count {
            let v = vectorLoad8(x + i)
            acc = acc.replacing(with: v, where: v .> acc)
            i += 8
        }
        // Lanes folded by compare-and-blend (SIMD's generic .max() stayed an out-of-line call).
        let a = acc.lowHalf.replacing(with: acc.highHalf, where: acc.highHalf .> acc.lowHalf)
        let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)
        var m = b[1] > b[0] ? b[1] : b[0]
        while i < count {
            if x[i] > m { m = x[i] }
            i += 1
        }
        return m
    }

    /// silu(x) = x * sigmoid(x) = x / (1 + e^-x), in place.
    public static func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        // Written out rather than through a closure: a closure argument stayed an indirect call
        // per 8 elements. The body compiles to vfmadd/vblendvps/vdivps on ymm.
        let one = FloatVector8(repeating: 1)
        var i = 0
        while i + 8 <= count {
            let v = vectorLoad8(x + i)
            vectorStore8(v / (one + vectorExp8(-v)), x + i)
            i += 8
        }
        if i < count {
            let v = vectorLoadPartial(x + i, count - i)
            vectorStorePartial(v / (one + vectorExp8(-v)), x + i, count - i)
        }
    }

    /// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))), in place. Computed as the
    /// identical x / (1 + e^(-2u)) with u the tanh argument (0.5(1 + tanh u) = sigmoid(2u)), which
    /// avoids tanh's cancellation near 0 and needs one exp.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        // One loop with the partial last block inside it: a single inlined copy of the body.
        var i = 0
        while i < count {
            let n = min(8, count - i)
            let v = n == 8 ? vectorLoad8(x + i) : vectorLoadPartial(x + i, n)
            let u = v.addingProduct(FloatVector8(repeating: 0.044715) * v, v * v)  // x + 0.044715 x³
            let e = vectorExp8(FloatVector8(repeating: -2 * 0.797_884_560_802_865_4) * u)  // e^(-2 sqrt(2/pi) u)
            let g = v / (FloatVector8(repeating: 1) + e)
            if n == 8 { vectorStore8(g, x + i) } else { vectorStorePartial(g, x + i, n) }
            i += n
        }
    }

    /// out = silu(gate) * up, elementwise over `count` (the Llama FFN gate). `out` may alias either.
    public static func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let g = vectorLoad8(gate + i)
            vectorStore8(g / (FloatVector8(repeating: 1) + vectorExp8(-g)) * vectorLoad8(up + i), out + i)
            i += 8
        }
        if i < count {
            let n = count - i
            let g = vectorLoadPartial(gate + i, n)
            vectorStorePartial(g / (FloatVector8(repeating: 1) + vectorExp8(-g)) * vectorLoadPartial(up + i, n), out + i, n)
        }
    }

    // MARK: Elementwise arithmetic (plain loops; LLVM vectorizes them with runtime alias checks)

    /// out = a + b.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = a[i] + b[i] }
    }

    /// out = a * b, elementwise.
    public static func multiply(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = a[i] * b[i] }
    }

    /// y += alpha * x, with one rounding per element (fused multiply-add: vfmadd ymm).
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] = y[i].addingProduct(alpha, x[i]) }
    }

    /// Σ a[i] b[i], four 8-lane FMA accumulators (hides the 4-cycle FMA latency).
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = FloatVector8(), a1 = FloatVector8(), a2 = FloatVector8(), a3 = FloatVector8()
        var i = 0
        while i + 32 <= count {
            a0.addProduct(vectorLoad8(a + i), vectorLoad8(b + i))
            a1.addProduct(vectorLoad8(a + i + 8), vectorLoad8(b + i + 8))
            a2.addProduct(vectorLoad8(a + i + 16), vectorLoad8(b + i + 16))
            a3.addProduct(vectorLoad8(a + i + 24), vectorLoad8(b + i + 24))
            i += 32
        }
        while i + 8 <= count {
            a0.addProduct(vectorLoad8(a + i), vectorLoad8(b + i))
            i += 8
        }
        if i < count {
            a1.addProduct(vectorLoadPartial(a + i, count - i), vectorLoadPartial(b + i, count - i))
        }
        return vectorLaneSum((a0 + a1) + (a2 + a3))
    }

    // MARK: Selection

    /// Index of the largest element, the lowest index among equals. NaN is never chosen (0 if all
    /// are NaN). Vector maximum first, then a scan for its first occurrence.
    public static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
        precondition(count > 0, "argmax of an empty vector")
        let m = maximum(x, count: count)
        for i in 0..<count where x[i] == m { return i }
        return 0
    }

    /// The `k` largest elements (k clamped to 0...count) sorted by value descending, ties by lower
    /// index. NaN counts as smaller than everything. O(count log k): a min-heap of the best k seen
    /// (root = worst kept), then one sort of the k survivors.
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int) -> [(index: Int, value: Float)] {
        let k = min(max(k, 0), count)
        if k == 0 { return [] }
        var heap = [Int](repeating: 0, count: k)
        heap.withUnsafeMutableBufferPointer { buffer in
            let h = buffer.baseAddress!
            for i in 0..<k {
                h[i] = i
                var c = i
                while c > 0 {
                    let parent = (c - 1) / 2
                    guard ranksBefore(x, h[parent], h[c]) else { break }
                    let t = h[parent]; h[parent] = h[c]; h[c] = t
                    c = parent
                }
            }
            // Later indices lose ties, so an element enters only if strictly above the worst kept
            // value. Blocks of 8 with nothing above it are skipped with one vcmpps + vmovmskps,
            // which is nearly every block of a logit vector.
            var threshold = rankKey(x[h[0]])
            var i = k
            while i < count {
                if i + 8 <= count && !any(vectorLoad8(x + i) .> FloatVector8(repeating: threshold)) {
                    i += 8
                    continue
                }
                let end = min(i + 8, count)
                for j in i..<end where rankKey(x[j]) > threshold {
                    h[0] = j
                    siftDown(x, h, k)
                    threshold = rankKey(x[h[0]])
                }
                i = end
            }
            buffer.sort { ranksBefore(x, $0, $1) }
        }
        return heap.map { (index: $0, value: x[$0]) }
    }

    @inline(__always)
    static func rankKey(_ v: Float) -> Float { v.isNaN ? -.infinity : v }

    /// Element a ranks before element b: larger value, or equal value and lower index.
    @inline(__always)
    static func ranksBefore(_ x: UnsafePointer<Float>, _ a: Int, _ b: Int) -> Bool {
        let av = rankKey(x[a]), bv = rankKey(x[b])
        return av > bv || (av == bv && a < b)
    }

    /// Restores the min-heap (worst-ranked at the root) of `n` indices after the root changed.
    @inline(__always)
    static func siftDown(_ x: UnsafePointer<Float>, _ h: UnsafeMutablePointer<Int>, _ n: Int) {
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var worst = i
            if l < n && ranksBefore(x, h[worst], h[l]) { worst = l }
            if r < n && ranksBefore(x, h[worst], h[r]) { worst = r }
            if worst == i { return }
            let t = h[i]; h[i] = h[worst]; h[worst] = t
            i = worst
        }
    }
}
