import Foundation

// Plain reference versions of every op in Ops.swift: the obvious loops, libm transcendentals,
// Double where a sum or an angle needs it. They define the expected results in the tests and are
// the fallback to read when an optimized version is in doubt.
extension Ops {
    /// out = x / sqrt(mean(x²) + epsilon) * weight, sum of squares in Double.
    public static func rmsNormReference(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int, epsilon: Float
    ) {
        var sum = 0.0
        for i in 0..<count { sum += Double(x[i]) * Double(x[i]) }
        let scale = Float(1.0 / (sum / Double(count) + Double(epsilon)).squareRoot())
        for i in 0..<count { out[i] = (x[i] * scale) * weight[i] }
    }

    /// RoPE straight from the definition: for each head and pair i, freq = theta^(-2i/Dh) by pow,
    /// angle = position * freq, both in Double.
    public static func ropeReference(
        _ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float, layout: RopeLayout
    ) {
        let half = headDim / 2
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let freq = pow(Double(theta), -2.0 * Double(i) / Double(headDim))
                let angle = Double(position) * freq
                let c = Float(cos(angle)), s = Float(sin(angle))
                let (ia, ib) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                let a = v[ia], b = v[ib]
                v[ia] = a * c - b * s
                v[ib] = a * s + b * c
            }
        }
    }

    /// Softmax with the maximum subtracted, libm exp, sum in Double.
    public static func softmaxReference(_ x: UnsafeMutablePointer<Float>, count: Int) {
        var m = -Float.infinity
        for i in 0..<count where x[i] > m { m = x[i] }
        var sum = 0.0
        for i in 0..<count {
            x[i] = exp(x[i] - m)
            sum += Double(x[i])
        }
        for i in 0..<count { x[i] = Float(Double(x[i]) / sum) }
    }

    /// e^x with libm, element by element.
    public static func expShiftedReference(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        var sum: Double = 0
        for i in 0..<count {
            x[i] = Foundation.exp(x[i] - shift)
            sum += Double(x[i])
        }
        return Float(sum)
    }

    public static func siluReference(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] = x[i] / (1 + exp(-x[i])) }
    }

    /// The tanh formula as written, in Double.
    public static func geluReference(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let v = Double(x[i])
            x[i] = Float(0.5 * v * (1 + tanh((2.0 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))))
        }
    }

    public static func swigluReference(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = gate[i] / (1 + exp(-gate[i])) * up[i] }
    }

    public static func addReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = a[i] + b[i] }
    }

    public static func multiplyReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int)
    {
        for i in 0..<count { out[i] = a[i] * b[i] }
    }

    /// y += alpha * x, the product and the sum in Double, rounded once.
    public static func axpyReference(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] = Float(Double(y[i]) + Double(alpha) * Double(x[i])) }
    }

    /// Σ a b in Double, rounded once.
    public static func dotReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var sum = 0.0
        for i in 0..<count { sum += Double(a[i]) * Double(b[i]) }
        return Float(sum)
    }

    /// First index of the maximum (NaN never chosen; 0 when all are NaN).
    public static func argmaxReference(_ x: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        var found = false
        for i in 0..<count where !x[i].isNaN && (!found || x[i] > bestValue) {
            best = i; bestValue = x[i]; found = true
        }
        return best
    }

    /// Full sort by (value descending, index ascending), NaN last; then the first k.
    public static func topKReference(_ x: UnsafePointer<Float>, count: Int, k: Int) -> [(index: Int, value: Float)] {
        let k = min(max(k, 0), count)
        let order = (0..<count).sorted { a, b in
            let av = x[a].isNaN ? -Float.infinity : x[a], bv = x[b].isNaN ? -Float.infinity : x[b]
            return av > bv || (av == bv && a < b)
        }
        return order.prefix(k).map { (index: $0, value: x[$0]) }
    }
}
