// Float16 (IEEE 754 binary16) and BFloat16 (the top 16 bits of a Float32) <-> Float32.
//
// Weight files store halves as raw UInt16 bit patterns (little endian, as read from the mmap), so
// the API speaks UInt16. Swift's `Float16` type does the IEEE work: with `-march=native` on an
// F16C machine `Float(Float16(bitPattern:))` is one `vcvtph2ps` and `Float16(Float)` one `vcvtps2ph`
// (round to nearest even, subnormals, inf and NaN all handled by the hardware).

/// The Float32 value of an IEEE half given by its bit pattern.
@inlinable @inline(__always)
public func float16ToFloat(_ h: UInt16) -> Float {
    Float(Float16(bitPattern: h))
}

/// The IEEE half nearest to `f` (ties to even; overflow to ±inf; NaN stays NaN), as a bit pattern.
@inlinable @inline(__always)
public func floatToFloat16(_ f: Float) -> UInt16 {
    Float16(f).bitPattern
}

/// The Float32 value of a bfloat16 bit pattern: exact, it is the upper half of a Float32.
@inlinable @inline(__always)
public func bfloat16ToFloat(_ b: UInt16) -> Float {
    Float(bitPattern: UInt32(b) << 16)
}

/// The bfloat16 nearest to `f`, ties to even. NaN maps to a quiet NaN of the same sign (a plain
/// rounding could carry a NaN's low payload bits into the exponent and produce inf).
@inlinable @inline(__always)
public func floatToBFloat16(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest with ties to even; a carry out of
    // the mantissa correctly bumps the exponent (up to inf for the largest finite values).
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

/// Converts `count` IEEE halves to Float32. The loop is plain so that LLVM vectorizes it: with
/// F16C (AVX2 builds) it compiles to `vcvtph2ps ymm`, eight halves at a time.
public func convertFloat16ToFloat(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        dst[i] = Float(Float16(bitPattern: src[i]))
    }
}

/// Converts `count` Float32 values to IEEE halves (nearest, ties to even): `vcvtps2ph` with F16C.
public func convertFloatToFloat16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
    for i in 0..<count {
        dst[i] = Float16(src[i]).bitPattern
    }
}

/// Converts `count` bfloat16 values to Float32 (a 16-bit shift per element; vectorizes).
public func convertBFloat16ToFloat(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        dst[i] = Float(bitPattern: UInt32(src[i]) << 16)
    }
}

/// Converts `count` Float32 values to bfloat16, nearest with ties to even.
public func convertFloatToBFloat16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
    for i in 0..<count {
        dst[i] = floatToBFloat16(src[i])
    }
}
