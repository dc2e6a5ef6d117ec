import XCTest
import ModelImport

/// Metadata of every type (nested arrays included) and tensor infos read back as written.
final class GGUFReaderTests: XCTestCase {
    func everyTypeBuilder(version: UInt32) -> GGUFBuilder {
        var b = GGUFBuilder()
        b.version = version
        b.set("u8", .uint8(200))
        b.set("i8", .int8(-100))
        b.set("u16", .uint16(60000))
        b.set("i16", .int16(-30000))
        b.set("u32", .uint32(4_000_000_000))
        b.set("i32", .int32(-2_000_000_000))
        b.set("f32", .float32(1.5e-6))
        b.set("bool", .bool(true))
        b.set("string", .string("héllo ▁ 世界"))
        b.set("u64", .uint64(18_000_000_000_000_000_000))
        b.set("i64", .int64(-9_000_000_000_000_000_000))
        b.set("f64", .float64(-2.25e300))
        b.set("empty string", .string(""))
        b.set("a.u8", .array(.uint8([1, 2, 255])))
        b.set("a.i8", .array(.int8([-128, 0, 127])))
        b.set("a.u16", .array(.uint16([0, 65535])))
        b.set("a.i16", .array(.int16([-32768, 32767])))
        b.set("a.u32", .array(.uint32([7, 4_294_967_295])))
        b.set("a.i32", .array(.int32([-1, 1, 3])))
        b.set("a.f32", .array(.float32([0.5, -0.25, .infinity])))
        b.set("a.bool", .array(.bool([true, false, true])))
        b.set("a.string", .array(.string(["a", "", "ĠHello", "<|im_end|>"])))
        b.set("a.u64", .array(.uint64([0, UInt64.max])))
        b.set("a.i64", .array(.int64([Int64.min, Int64.max])))
        b.set("a.f64", .array(.float64([1e-300, 3.5])))
        b.set("a.empty", .array(.float32([])))
        b.set("a.nested", .array(.array([.int32([1, 2]), .string(["x", "y", "z"]), .array([.uint8([9])]), .float64([])])))
        b.add("v", dimensions: [4], floats: [1, 2, 3, 4])
        b.add("m", dimensions: [3, 2], floats: [1, 2, 3, 4, 5, 6], as: .F16)
        return b
    }

    func testEveryMetadataTypeReadsBackAsWrittenInVersions2And3() throws {
        for version: UInt32 in [2, 3] {
            let b = everyTypeBuilder(version: version)
            let file = try openGGUF(b)
            XCTAssertEqual(file.version, version)
            XCTAssertEqual(file.metadataKeys, b.metadata.map(\.key))
            for (key, value) in b.metadata {
                XCTAssertEqual(file.metadata[key], value, "metadata '\(key)' (v\(version))")
            }
            XCTAssertEqual(file.metadata["a.nested"]?.arrayValue?.elementType, .array)
        }
    }

    func testTensorInfosAndData() throws {
        let file = try openGGUF(everyTypeBuilder(version: 3))
        XCTAssertEqual(file.tensors.map(\.name), ["v", "m"])
        let m = try XCTUnwrap(file.tensorInfo(named: "m"))
        XCTAssertEqual(m.dimensions, [3, 2])
        XCTAssertEqual(m.type, .F16)
        XCTAssertEqual(m.rows, 2)
        XCTAssertEqual(m.cols, 3)
        XCTAssertEqual(m.byteLength, 12)
        XCTAssertEqual(try file.dequantize(m), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try file.dequantize(file.tensorInfo(named: "v")!), [1, 2, 3, 4])
        XCTAssertEqual(file.dataOffset % 32, 0)
    }

    func testCustomAlignmentIsHonoured() throws {
        var b = GGUFBuilder()
        b.alignment = 64
        b.set("general.alignment", .uint32(64))
        b.add("a", dimensions: [3], floats: [1, 2, 3])
        b.add("b", dimensions: [2], floats: [7, 8])
        let file = try openGGUF(b)
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.dataOffset % 64, 0)
        XCTAssertEqual(file.tensorInfo(named: "b")?.offset, 64)
        XCTAssertEqual(try file.dequantize(file.tensorInfo(named: "b")!), [7, 8])
    }

    func testTypedAccessors() {
        XCTAssertEqual(GGUFValue.uint32(7).intValue, 7)
        XCTAssertEqual(GGUFValue.int8(-3).intValue, -3)
        XCTAssertNil(GGUFValue.uint64(UInt64.max).intValue)
        XCTAssertEqual(GGUFValue.float32(0.5).floatValue, 0.5)
        XCTAssertEqual(GGUFValue.string("x").stringValue, "x")
        XCTAssertEqual(GGUFArray.int32([1, -2]).intValues, [1, -2])
        XCTAssertEqual(GGUFArray.float64([1.5]).floatValues, [1.5])
        XCTAssertNil(GGUFArray.string(["a"]).intValues)
    }
}
