// Eight-lane Float helpers for the elementwise ops (AVX2: one ymm register per SIMD8<Float>).
//
// Swift's `exp`/`tanh` are scalar libm calls; softmax over a long context and SiLU/GELU over the
// FFN width call them hundreds of thousands of times per token, so the ops use this polynomial exp
// instead. Only operations that lower to single vector instructions (docs/kernels.md) are used:
// + - * / on SIMD8<Float>, `addingProduct` (vfmadd), comparisons with `replacing` (vcmpps +
// vblendvps), bit casts, and shifts/adds on SIMD8<Int32>.

typealias FloatVector8 = SIMD8<Float>

@inline(__always)
func vectorLoad8(_ p: UnsafePointer<Float>) -> FloatVector8 {
    UnsafeRawPointer(p).loadUnaligned(as: FloatVector8.self)
}

@inline(__always)
func vectorStore8(_ v: FloatVector8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: FloatVector8.self)
}

/// The first `n` (< 8) elements at `p`, the other lanes set to `fill`.
@inline(__always)
func vectorLoadPartial(_ p: UnsafePointer<Float>, _ n: Int, fill: Float = 0) -> FloatVector8 {
    var v = FloatVector8(repeating: fill)
    for j in 0..<n { v[j] = p[j] }
    return v
}

@inline(__always)
func vectorStorePartial(_ v: FloatVector8, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    for j in 0..<n { p[j] = v[j] }
}

/// e^x per lane, Cephes' expf scheme: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts so
/// n*ln2 is exact), e^r by a degree-7 polynomial, 2^n built in the exponent bits in two halves so
/// that every n of the range is two normal powers of two. Relative error <= 2 ulp (tested through
/// silu against libm over -100...100). Above ln(Float.max) = 88.72 the result is +inf (as libm);
/// below -103.9 it is 0 (libm's smallest subnormals there are far below anything that matters in a
/// softmax or a sigmoid); NaN propagates.
// @_transparent: with @inline(__always) alone the optimizer still kept it out of line in
// softmax and in the tail blocks (a call per 8 elements).
@_transparent
func vectorExp8(_ x: FloatVector8) -> FloatVector8 {
    let hi = FloatVector8(repeating: 88.722_84)
    let lo = FloatVector8(repeating: -103.9)
    let tooSmall = x .< lo
    let tooLarge = x .> hi
    var v = x.replacing(with: hi, where: tooLarge)
    v = v.replacing(with: lo, where: tooSmall)
    // n = round(v / ln2) by the 1.5 * 2^23 trick: adding it leaves the rounded integer in the low
    // mantissa bits, so the bit difference is n as an Int32 (no float->int conversion needed).
    let magic = FloatVector8(repeating: 12_582_912.0)
    let shifted = v * FloatVector8(repeating: 1.442_695_04) + magic
    let n = shifted - magic
    let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    var r = v.addingProduct(n, FloatVector8(repeating: -0.693_359_375))
    r = r.addingProduct(n, FloatVector8(repeating: 2.121_944_4e-4))
    var p = FloatVector8(repeating: 1.987_569_150_0e-4)
    p = FloatVector8(repeating: 1.398_199_950_7e-3).addingProduct(p, r)
    p = FloatVector8(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
    p = FloatVector8(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
    p = FloatVector8(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
    p = FloatVector8(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
    let r2 = r * r
    let er = (r + FloatVector8(repeating: 1)).addingProduct(p, r2)
    // n is in -150...128; n1 = n >> 1 and n2 = n - n1 are both in -75...64, so 2^n1 and 2^n2 are
    // normal floats and er * 2^n1 * 2^n2 under- or overflows only when e^x itself does.
    let n1 = ni &>> 1
    let n2 = ni &- n1
    let scale1 = unsafeBitCast((n1 &+ 127) &<< 23, to: FloatVector8.self)
    let scale2 = unsafeBitCast((n2 &+ 127) &<< 23, to: FloatVector8.self)
    return ((er * scale1) * scale2)
        .replacing(with: FloatVector8(repeating: 0), where: tooSmall)
        .replacing(with: FloatVector8(repeating: .infinity), where: tooLarge)
}

/// Adds the eight lanes in a fixed pairwise order (4 + 4, 2 + 2, 1 + 1).
@inline(__always)
func vectorLaneSum(_ v: FloatVector8) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    return b[0] + b[1]
}
