import XCTest
import Foundation
import Tensor
import TestSupport

/// The vector lengths every op is tried on: 1 and 3 (shorter than a vector register), 31 and 33
/// (one off a multiple of 8/32 both ways), and the default model's hidden and FFN widths.
let awkwardSizes = [1, 3, 31, 33, 896, 4864]

/// Runs an in-place op and its reference on copies of `input`, returns (optimized, reference).
func inPlace(
    _ input: [Float], _ op: (UnsafeMutablePointer<Float>, Int) -> Void,
    _ reference: (UnsafeMutablePointer<Float>, Int) -> Void
) -> ([Float], [Float]) {
    var a = input, b = input
    a.withUnsafeMutableBufferPointer { op($0.baseAddress!, $0.count) }
    b.withUnsafeMutableBufferPointer { reference($0.baseAddress!, $0.count) }
    return (a, b)
}

final class RMSNormTests: XCTestCase {
    // The optimized sum differs from the Double reference by a few Float roundings of a 32-term
    // partial sum (< 1e-6 relative in the scale); outputs are then rounded identically.
    func testMatchesReference() {
        var rng = SeededGenerator(seed: 1)
        for n in awkwardSizes {
            for magnitude: Float in [1e-3, 1, 300] {
                let x = rng.floats(n, in: -magnitude...magnitude)
                let w = rng.floats(n, in: 0.5...1.5)
                var out = [Float](repeating: 0, count: n), expected = out
                Ops.rmsNorm(x, weight: w, out: &out, count: n, epsilon: 1e-6)
                Ops.rmsNormReference(x, weight: w, out: &expected, count: n, epsilon: 1e-6)
                XCTAssertNil(mismatch(out, expected, absolute: 1e-7, relative: 2e-6), "n \(n) magnitude \(magnitude)")
            }
        }
    }

    func testHandValueAndInPlace() {
        // x = [3, 4]: mean(x²) = 12.5, 1/sqrt(12.5) = 0.28284271; weight [1, 2].
        var x: [Float] = [3, 4]
        Ops.rmsNorm(x, weight: [1, 2], out: &x, count: 2, epsilon: 0)
        XCTAssertNil(mismatch(x, [0.848528137, 2.262741700], relative: 1e-6))
        // All zeros: epsilon keeps it finite.
        var z = [Float](repeating: 0, count: 33)
        Ops.rmsNorm(z, weight: [Float](repeating: 1, count: 33), out: &z, count: 33, epsilon: 1e-6)
        XCTAssertEqual(z, [Float](repeating: 0, count: 33))
    }
}

final class RopeTests: XCTestCase {
    /// headDim 4, position 1, theta 10000: freqs are 10000^0 = 1 and 10000^(-1/2) = 0.01, so the
    /// angles are 1 and 0.01 rad. Values computed by hand from cos/sin of those angles.
    func testHandComputedBothLayouts() {
        let c1 = Float(cos(1.0)), s1 = Float(sin(1.0)), c2 = Float(cos(0.01)), s2 = Float(sin(0.01))
        // interleaved: pairs (x0, x1) at angle 1, (x2, x3) at angle 0.01
        var x: [Float] = [1, 2, 3, 4]
        Ops.rope(&x, heads: 1, headDim: 4, position: 1, theta: 10000, layout: .interleaved)
        XCTAssertNil(mismatch(x, [1 * c1 - 2 * s1, 1 * s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2], absolute: 1e-6))
        XCTAssertNil(mismatch(x, [-1.142_639_7, 1.922_075_6, 2.959_850_7, 4.029_799_5], absolute: 1e-6))
        // halves: pairs (x0, x2) at angle 1, (x1, x3) at angle 0.01
        var y: [Float] = [1, 2, 3, 4]
        Ops.rope(&y, heads: 1, headDim: 4, position: 1, theta: 10000, layout: .halves)
        XCTAssertNil(mismatch(y, [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 1 * s1 + 3 * c1, 2 * s2 + 4 * c2], absolute: 1e-6))
        XCTAssertNil(mismatch(y, [-1.984_110_6, 1.959_900_7, 2.462_377_9, 4.019_799_7], absolute: 1e-6))
        // position 0 is the identity
        var z: [Float] = [1, 2, 3, 4]
        Ops.rope(&z, heads: 1, headDim: 4, position: 0, theta: 10000, layout: .halves)
        XCTAssertEqual(z, [1, 2, 3, 4])
    }

    func testMatchesReference() {
        var rng = SeededGenerator(seed: 2)
        for layout in Ops.RopeLayout.allCases {
            for (heads, headDim) in [(1, 2), (3, 64), (14, 64), (2, 128), (1, 256)] {
                for position in [0, 1, 7, 100, 4095, 32767] {
                    for theta: Float in [10000, 1_000_000] {
                        let x = rng.floats(heads * headDim, in: -2...2)
                        let (fast, ref) = inPlace(
                            x, { p, _ in Ops.rope(p, heads: heads, headDim: headDim, position: position, theta: theta, layout: layout) },
                            { p, _ in Ops.ropeReference(p, heads: heads, headDim: headDim, position: position, theta: theta, layout: layout)
                            })
                        XCTAssertNil(
                            mismatch(fast, ref, absolute: 1e-5), "\(layout) heads \(heads) dh \(headDim) pos \(position) theta \(theta)")
                    }
                }
            }
        }
    }

    /// Rotations compose: rotating by position p then by q equals rotating by p + q (the property
    /// that makes q·k depend only on the distance between positions).
    func testRotationsCompose() {
        var rng = SeededGenerator(seed: 13)
        for layout in Ops.RopeLayout.allCases {
            for (p, q) in [(1, 2), (1000, 24), (16384, 16383)] {
                let x = rng.floats(2 * 64, in: -1...1)
                var twice = x, once = x
                Ops.rope(&twice, heads: 2, headDim: 64, position: p, theta: 1_000_000, layout: layout)
                Ops.rope(&twice, heads: 2, headDim: 64, position: q, theta: 1_000_000, layout: layout)
                Ops.rope(&once, heads: 2, headDim: 64, position: p + q, theta: 1_000_000, layout: layout)
                XCTAssertNil(mismatch(twice, once, absolute: 2e-6), "\(layout) \(p) + \(q)")
            }
        }
    }

    /// A rotation keeps the length of every pair it turns.
    func testPreservesPairNorms() {
        var rng = SeededGenerator(seed: 3)
        let heads = 3, headDim = 64, half = 32
        for layout in Ops.RopeLayout.allCases {
            for position in [1, 513, 32767] {
                let x = rng.floats(heads * headDim, in: -3...3)
                var y = x
                Ops.rope(&y, heads: heads, headDim: headDim, position: position, theta: 1_000_000, layout: layout)
                for h in 0..<heads {
                    for i in 0..<half {
                        let (a, b) =
                            layout == .interleaved
                            ? (h * headDim + 2 * i, h * headDim + 2 * i + 1) : (h * headDim + i, h * headDim + i + half)
                        let before = (x[a] * x[a] + x[b] * x[b]).squareRoot()
                        let after = (y[a] * y[a] + y[b] * y[b]).squareRoot()
                        XCTAssertEqual(after, before, accuracy: 1e-5 * max(1, before), "\(layout) pos \(position) head \(h) pair \(i)")
                    }
                }
            }
        }
    }
}

final class SoftmaxTests: XCTestCase {
    // The vector exp is within 2 ulp of libm's; sums differ in the last bits: 1e-5 relative.
    func testMatchesReference() {
        var rng = SeededGenerator(seed: 4)
        for n in awkwardSizes + [32768] {
            for scale: Float in [1, 30] {
                let x = rng.floats(n, in: -scale...scale)
                let (fast, ref) = inPlace(x, Ops.softmax, Ops.softmaxReference)
                XCTAssertNil(mismatch(fast, ref, absolute: 1e-9, relative: 1e-5), "n \(n) scale \(scale)")
            }
        }
    }

    func testStableOnHugeInputs() {
        var rng = SeededGenerator(seed: 5)
        for n in awkwardSizes {
            var x = rng.floats(n, in: -1e4...1e4)
            x[n / 2] = 1e4  // a clear winner
            let (fast, ref) = inPlace(x, Ops.softmax, Ops.softmaxReference)
            XCTAssertFalse(fast.contains { !$0.isFinite }, "n \(n): non-finite output")
            XCTAssertEqual(fast.reduce(0, +), 1, accuracy: 1e-5, "n \(n)")
            XCTAssertNil(mismatch(fast, ref, absolute: 1e-9, relative: 1e-5), "n \(n)")
        }
        var big: [Float] = [1e4, 1e4 - 1, -1e4]
        Ops.softmax(&big, count: 3)
        XCTAssertNil(mismatch(big, [0.731_058_6, 0.268_941_4, 0], absolute: 1e-6))
        var equal = [Float](repeating: 5e3, count: 31)
        Ops.softmax(&equal, count: 31)
        XCTAssertNil(mismatch(equal, [Float](repeating: 1 / 31, count: 31), relative: 1e-6))
    }
}

final class ActivationTests: XCTestCase {
    // The 2-ulp vector exp against libm; arguments ≤ 5 as attention's shifted scores. The sum is
    // of up to 4864 positive terms in 8 Float lanes: relative error <= ~600 · 6e-8 against Double.
    func testExpShiftedMatchesReference() {
        var rng = SeededGenerator(seed: 61)
        for n in awkwardSizes {
            for (range, shift): (ClosedRange<Float>, Float) in [(-1...0, 0), (-30...0, 0), (-100...5, 0), (2...9, 9)] {
                let x = rng.floats(n, in: range)
                var e = x, er = x
                let sum = Ops.expShifted(&e, count: n, shift: shift)
                let expected = Ops.expShiftedReference(&er, count: n, shift: shift)
                XCTAssertNil(mismatch(e, er, absolute: 1e-37, relative: 2e-6), "exp n \(n) \(range)")
                XCTAssertEqual(sum, expected, accuracy: expected * 5e-5, "sum n \(n) \(range)")
            }
        }
        var special: [Float] = [-.infinity, 0, -200]
        XCTAssertEqual(Ops.expShifted(&special, count: 3, shift: 0), 1)
        XCTAssertEqual(special[0], 0, "exp(-inf) = 0: a masked score adds nothing")
        XCTAssertEqual(special[1], 1)
        XCTAssertEqual(special[2], 0, accuracy: 1e-38)
    }

    // 2-ulp vector exp, then one division: compared with relative 2e-6 plus a tiny absolute term
    // for outputs near 0 (silu of large negatives is ~x e^x, far below 1e-30).
    func testSiluAndGeluMatchReference() {
        var rng = SeededGenerator(seed: 6)
        for n in awkwardSizes {
            for range: ClosedRange<Float> in [-1...1, -12...12, -100...100] {
                let x = rng.floats(n, in: range)
                let (s, sr) = inPlace(x, Ops.silu, Ops.siluReference)
                XCTAssertNil(mismatch(s, sr, absolute: 1e-30, relative: 2e-6), "silu n \(n) \(range)")
                let (g, gr) = inPlace(x, Ops.gelu, Ops.geluReference)
                XCTAssertNil(mismatch(g, gr, absolute: 1e-7, relative: 4e-6), "gelu n \(n) \(range)")
            }
        }
    }

    /// Sweeps the whole exp range through silu (x / (1 + e^-x)): checks the vector exp everywhere,
    /// including the clamps at -87.3 and 88.
    func testSiluOverTheWholeExpRange() {
        let x = (0..<4001).map { Float($0 - 2000) * 0.05 }  // -100 ... 100
        let (s, sr) = inPlace(x, Ops.silu, Ops.siluReference)
        XCTAssertNil(mismatch(s, sr, absolute: 1e-30, relative: 2e-6))
        var special: [Float] = [.infinity, -.infinity, 0, -0.0, 1e30, -1e30]
        Ops.silu(&special, count: special.count)
        XCTAssertEqual(special[0], .infinity)
        XCTAssertTrue(special[1].isNaN, "silu(-inf) = -inf / inf, as in the reference")
        XCTAssertEqual(special[2], 0)
        XCTAssertEqual(special[4], 1e30)
        XCTAssertEqual(special[5], 0)
        var nan: [Float] = [.nan, 1, .nan]
        Ops.gelu(&nan, count: 3)
        XCTAssertTrue(nan[0].isNaN && nan[2].isNaN)
        XCTAssertEqual(nan[1], 0.841_191_9, accuracy: 1e-6)  // gelu_tanh(1)
    }

    func testGeluHandValues() {
        // gelu_tanh(x) from the formula in Double: x = -3, -1, 0, 0.5, 2
        var x: [Float] = [-3, -1, 0, 0.5, 2]
        Ops.gelu(&x, count: 5)
        XCTAssertNil(mismatch(x, [-0.003_637_392, -0.158_808_0, 0, 0.345_714_0, 1.954_597_7], absolute: 1e-6))
    }

    func testSwigluMatchesReference() {
        var rng = SeededGenerator(seed: 7)
        for n in awkwardSizes {
            let gate = rng.floats(n, in: -10...10), up = rng.floats(n, in: -3...3)
            var out = [Float](repeating: 0, count: n), expected = out
            Ops.swiglu(gate: gate, up: up, out: &out, count: n)
            Ops.swigluReference(gate: gate, up: up, out: &expected, count: n)
            XCTAssertNil(mismatch(out, expected, absolute: 1e-30, relative: 3e-6), "n \(n)")
            // out aliasing gate, as the forward pass does
            var g = gate
            g.withUnsafeMutableBufferPointer { Ops.swiglu(gate: $0.baseAddress!, up: up, out: $0.baseAddress!, count: n) }
            XCTAssertEqual(g, out)
        }
    }
}

final class ElementwiseTests: XCTestCase {
    func testAddMultiplyAreExact() {
        var rng = SeededGenerator(seed: 8)
        for n in awkwardSizes {
            let a = rng.floats(n, in: -5...5), b = rng.floats(n, in: -5...5)
            var out = [Float](repeating: 0, count: n), expected = out
            Ops.add(a, b, out: &out, count: n)
            Ops.addReference(a, b, out: &expected, count: n)
            XCTAssertEqual(out, expected)
            Ops.multiply(a, b, out: &out, count: n)
            Ops.multiplyReference(a, b, out: &expected, count: n)
            XCTAssertEqual(out, expected)
            // in place (out == a), the residual-add pattern
            var r = a
            r.withUnsafeMutableBufferPointer { Ops.add($0.baseAddress!, b, out: $0.baseAddress!, count: n) }
            Ops.addReference(a, b, out: &expected, count: n)
            XCTAssertEqual(r, expected)
        }
    }

    /// axpy uses a fused multiply-add (one rounding); the reference rounds the Double result once
    /// more: they can differ by 1 ulp through double rounding.
    func testAxpy() {
        var rng = SeededGenerator(seed: 9)
        for n in awkwardSizes {
            let x = rng.floats(n, in: -5...5), y = rng.floats(n, in: -5...5)
            var fast = y, ref = y
            Ops.axpy(0.37, x, &fast, count: n)
            Ops.axpyReference(0.37, x, &ref, count: n)
            XCTAssertNil(mismatch(fast, ref, absolute: 1e-20, relative: 1.2e-7), "n \(n)")
        }
    }

    /// dot accumulates in 32 Float lanes; the error bound is relative to Σ|a b| (not to the result,
    /// which can cancel): 1e-6 of it covers 4864 terms.
    func testDot() {
        var rng = SeededGenerator(seed: 10)
        for n in awkwardSizes + [64, 128] {
            let a = rng.floats(n, in: -2...2), b = rng.floats(n, in: -2...2)
            let fast = Ops.dot(a, b, count: n)
            let ref = Ops.dotReference(a, b, count: n)
            let scale = zip(a, b).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
            XCTAssertEqual(fast, ref, accuracy: 1e-6 * scale + 1e-30, "n \(n)")
        }
        XCTAssertEqual(Ops.dot([1, 2, 3], [4, 5, 6], count: 3), 32)
        XCTAssertEqual(Ops.dot([1], [1], count: 0), 0)
    }
}

final class SelectionTests: XCTestCase {
    func testArgmaxMatchesReference() {
        var rng = SeededGenerator(seed: 11)
        for n in awkwardSizes + [151_936] {
            // Few distinct values so ties are common: the lowest index must win.
            let x = (0..<n).map { _ in Float(Int.random(in: -20...20, using: &rng)) }
            XCTAssertEqual(Ops.argmax(x, count: n), Ops.argmaxReference(x, count: n), "n \(n)")
            let y = rng.floats(n)
            XCTAssertEqual(Ops.argmax(y, count: n), Ops.argmaxReference(y, count: n), "n \(n)")
        }
        XCTAssertEqual(Ops.argmax([1, 3, 3, 2], count: 4), 1)
        XCTAssertEqual(Ops.argmax([.nan, -1, .nan, 5, 5, .nan, 1, 2, 3, 4, 5], count: 11), 3)
        XCTAssertEqual(Ops.argmax([-.infinity, -.infinity], count: 2), 0)
        XCTAssertEqual(Ops.argmax([.nan, .nan], count: 2), 0)
        let last = (0..<33).map { Float($0) }
        XCTAssertEqual(Ops.argmax(last, count: 33), 32)
    }

    func testTopKMatchesReference() {
        var rng = SeededGenerator(seed: 12)
        for n in awkwardSizes {
            let x = (0..<n).map { _ in Float(Int.random(in: -8...8, using: &rng)) }
            for k in [0, 1, 5, 40, n, n + 3] {
                let fast = Ops.topK(x, count: n, k: k)
                let ref = Ops.topKReference(x, count: n, k: k)
                XCTAssertEqual(fast.map(\.index), ref.map(\.index), "n \(n) k \(k)")
                XCTAssertEqual(fast.map(\.value), ref.map(\.value), "n \(n) k \(k)")
            }
        }
        let t = Ops.topK([0.5, 2, .nan, 2, -1, 7], count: 6, k: 4)
        XCTAssertEqual(t.map(\.index), [5, 1, 3, 0])
        XCTAssertEqual(t.map(\.value), [7, 2, 2, 0.5])
    }
}
