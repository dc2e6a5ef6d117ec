import XCTest
import Tensor
import TestSupport

/// Independent software decoder for IEEE binary16, from the format's definition (sign, 5-bit
/// exponent with bias 15, 10-bit mantissa; exponent 0 = subnormal, 31 = inf/NaN).
private func decodeHalf(_ h: UInt16) -> Float {
    let sign: Float = (h & 0x8000) != 0 ? -1 : 1
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = Float(h & 0x3FF)
    switch exponent {
    case 0: return sign * mantissa * 0x1p-24
    case 31: return mantissa == 0 ? sign * .infinity : .nan
    default: return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}

final class Float16ConversionTests: XCTestCase {
    func testKnownBitPatterns() {
        XCTAssertEqual(float16ToFloat(0x3C00), 1.0)
        XCTAssertEqual(float16ToFloat(0xC000), -2.0)
        XCTAssertEqual(float16ToFloat(0x7BFF), 65504.0)
        XCTAssertEqual(float16ToFloat(0x0001), 0x1p-24)  // smallest subnormal
        XCTAssertEqual(float16ToFloat(0x03FF), 1023 * 0x1p-24)  // largest subnormal
        XCTAssertEqual(float16ToFloat(0x0400), 0x1p-14)  // smallest normal
        XCTAssertEqual(float16ToFloat(0x3555), 0.333251953125)
        XCTAssertEqual(float16ToFloat(0x7C00), .infinity)
        XCTAssertEqual(float16ToFloat(0xFC00), -.infinity)
        XCTAssertTrue(float16ToFloat(0x7E00).isNaN)
        XCTAssertTrue(float16ToFloat(0xFE01).isNaN)
        XCTAssertEqual(float16ToFloat(0x8000).bitPattern, (-0.0 as Float).bitPattern)

        XCTAssertEqual(floatToFloat16(1.0), 0x3C00)
        XCTAssertEqual(floatToFloat16(-2.0), 0xC000)
        XCTAssertEqual(floatToFloat16(65504), 0x7BFF)
        XCTAssertEqual(floatToFloat16(0x1p-24), 0x0001)
        XCTAssertEqual(floatToFloat16(.infinity), 0x7C00)
        XCTAssertEqual(floatToFloat16(-.infinity), 0xFC00)
        XCTAssertEqual(floatToFloat16(-0.0), 0x8000)
        XCTAssertTrue(float16ToFloat(floatToFloat16(.nan)).isNaN)
    }

    func testRoundingToNearestEven() {
        // Halfway between 1.0 (0x3C00, even) and 1 + 2^-10 (0x3C01): goes to the even one.
        XCTAssertEqual(floatToFloat16(1 + 0x1p-11), 0x3C00)
        // Halfway between 0x3C01 and 0x3C02 (even): up.
        XCTAssertEqual(floatToFloat16(1 + 3 * 0x1p-11), 0x3C02)
        // Just above halfway: up.
        XCTAssertEqual(floatToFloat16(1 + 0x1p-11 + 0x1p-20), 0x3C01)
        // 65520 is halfway between 65504 (0x7BFF, odd) and 65536 (not representable): to inf.
        XCTAssertEqual(floatToFloat16(65520), 0x7C00)
        XCTAssertEqual(floatToFloat16(65519), 0x7BFF)
        // Subnormal ties: 2^-25 is halfway between 0 and 0x0001 -> 0; 1.5 * 2^-24 -> 0x0002.
        XCTAssertEqual(floatToFloat16(0x1p-25), 0x0000)
        XCTAssertEqual(floatToFloat16(1.5 * 0x1p-24), 0x0002)
        XCTAssertEqual(floatToFloat16(0x1p-25 + 0x1p-40), 0x0001)
    }

    func testEveryHalfDecodesAsDefinedAndRoundTrips() {
        var src = [UInt16](repeating: 0, count: 65536)
        for i in 0..<65536 { src[i] = UInt16(i) }
        var bulk = [Float](repeating: 0, count: 65536)
        src.withUnsafeBufferPointer { s in
            bulk.withUnsafeMutableBufferPointer { d in convertFloat16ToFloat(s.baseAddress!, d.baseAddress!, count: 65536) }
        }
        var back = [UInt16](repeating: 0, count: 65536)
        bulk.withUnsafeBufferPointer { s in
            back.withUnsafeMutableBufferPointer { d in convertFloatToFloat16(s.baseAddress!, d.baseAddress!, count: 65536) }
        }
        var failures = 0
        for i in 0..<65536 {
            let h = UInt16(i)
            let expected = decodeHalf(h)
            let scalar = float16ToFloat(h)
            if expected.isNaN {
                if !(scalar.isNaN && bulk[i].isNaN && float16ToFloat(back[i]).isNaN) { failures += 1 }
                continue
            }
            if scalar.bitPattern != expected.bitPattern || bulk[i].bitPattern != expected.bitPattern
                || floatToFloat16(scalar) != h || back[i] != h
            {
                failures += 1
                if failures < 5 {
                    XCTFail(
                        "half 0x\(String(h, radix: 16)): decoded \(scalar) / bulk \(bulk[i]), expected \(expected); back 0x\(String(floatToFloat16(scalar), radix: 16))"
                    )
                }
            }
        }
        XCTAssertEqual(failures, 0)
    }

    /// For random floats over the half range (normal and subnormal), the encoded half must be the
    /// nearest representable one, ties to the even pattern.
    func testEncodingIsNearest() {
        var rng = SeededGenerator(seed: 16)
        for _ in 0..<20_000 {
            let magnitude = Float(
                sign: .plus, exponent: Int.random(in: -27...15, using: &rng),
                significand: Float.random(in: 1..<2, using: &rng))
            let f = Bool.random(using: &rng) ? magnitude : -magnitude
            let h = floatToFloat16(f)
            let v = decodeHalf(h)
            guard v.isFinite else { XCTAssertGreaterThanOrEqual(abs(f), 65520, "\(f) overflowed"); continue }
            let error = abs(Double(f) - Double(v))
            for neighbour in [h &+ 1, h &- 1] where (neighbour & 0x7C00) != 0x7C00 && (neighbour & 0x8000) == (h & 0x8000) {
                let other = abs(Double(f) - Double(decodeHalf(neighbour)))
                XCTAssertLessThanOrEqual(error, other, "\(f) -> 0x\(String(h, radix: 16)) but 0x\(String(neighbour, radix: 16)) is nearer")
                if error == other { XCTAssertEqual(h & 1, 0, "\(f): tie not resolved to even") }
            }
        }
    }
}

final class BFloat16ConversionTests: XCTestCase {
    func testKnownBitPatterns() {
        XCTAssertEqual(bfloat16ToFloat(0x3F80), 1.0)
        XCTAssertEqual(bfloat16ToFloat(0xC000), -2.0)
        XCTAssertEqual(bfloat16ToFloat(0x7F80), .infinity)
        XCTAssertEqual(bfloat16ToFloat(0x0001), Float(bitPattern: 0x0001_0000))  // subnormal
        XCTAssertTrue(bfloat16ToFloat(0x7FC0).isNaN)
        XCTAssertEqual(floatToBFloat16(1.0), 0x3F80)
        XCTAssertEqual(floatToBFloat16(-2.0), 0xC000)
        XCTAssertEqual(floatToBFloat16(.infinity), 0x7F80)
        XCTAssertEqual(floatToBFloat16(-.infinity), 0xFF80)
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0x0001_0000)), 0x0001)
    }

    func testRoundingToNearestEvenAndNaN() {
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0x3F80_8000)), 0x3F80)  // tie -> even (down)
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0x3F81_8000)), 0x3F82)  // tie -> even (up)
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0x3F80_8001)), 0x3F81)  // above tie
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0x3F80_7FFF)), 0x3F80)  // below tie
        XCTAssertEqual(floatToBFloat16(.greatestFiniteMagnitude), 0x7F80)  // rounds to inf
        // A NaN whose payload sits only in the low bits must stay NaN (plain rounding would give inf).
        for bits: UInt32 in [0x7F80_0001, 0x7FC0_0000, 0xFF80_FFFF, 0x7FFF_FFFF] {
            XCTAssertTrue(bfloat16ToFloat(floatToBFloat16(Float(bitPattern: bits))).isNaN, "0x\(String(bits, radix: 16))")
        }
        XCTAssertEqual(floatToBFloat16(Float(bitPattern: 0xFF80_0001)) & 0x8000, 0x8000, "NaN keeps its sign")
    }

    func testEveryBFloat16RoundTripsAndBulkMatchesScalar() {
        var src = [UInt16](repeating: 0, count: 65536)
        for i in 0..<65536 { src[i] = UInt16(i) }
        var bulk = [Float](repeating: 0, count: 65536)
        var back = [UInt16](repeating: 0, count: 65536)
        src.withUnsafeBufferPointer { s in
            bulk.withUnsafeMutableBufferPointer { d in convertBFloat16ToFloat(s.baseAddress!, d.baseAddress!, count: 65536) }
        }
        bulk.withUnsafeBufferPointer { s in
            back.withUnsafeMutableBufferPointer { d in convertFloatToBFloat16(s.baseAddress!, d.baseAddress!, count: 65536) }
        }
        var failures = 0
        for i in 0..<65536 {
            let b = UInt16(i)
            let f = bfloat16ToFloat(b)
            XCTAssertEqual(f.bitPattern, bulk[i].bitPattern)
            if f.isNaN { if !bfloat16ToFloat(back[i]).isNaN { failures += 1 }; continue }
            if floatToBFloat16(f) != b || back[i] != b { failures += 1 }
        }
        XCTAssertEqual(failures, 0)
    }
}
