import Foundation
import XCTest
import ModelImport

/// Truncated, corrupted or unsupported GGUF files give a GGUFError / ImportError naming the
/// problem, never a crash.
final class BadInputTests: XCTestCase {
    func validBuilder() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.set("general.architecture", .string("llama"))
        b.set("tokens", .array(.string(["a", "b", "c"])))
        b.set("nested", .array(.array([.int32([1, 2]), .float32([0.5])])))
        b.add("w", dimensions: [32, 2], type: .Q8_0, data: HandBuiltBlocks.q8_0().0 + HandBuiltBlocks.q8_0().0)
        b.add("v", dimensions: [4], floats: [1, 2, 3, 4])
        return b
    }

    /// Writes `bytes` and opens them, expecting a GGUFError whose message contains `expected`.
    func expectError(_ bytes: [UInt8], _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        let path = temporaryPath(UUID().uuidString + ".gguf")
        XCTAssertNoThrow(try Data(bytes).write(to: URL(fileURLWithPath: path)))
        do {
            _ = try GGUFFile(path: path)
            XCTFail("expected an error containing '\(expected)'", file: file, line: line)
        } catch let error as GGUFError {
            XCTAssertTrue(
                error.message.contains(expected), "message '\(error.message)' should contain '\(expected)'", file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), "one line", file: file, line: line)
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
    }

    func testValidFileOpens() throws {
        XCTAssertNoThrow(try openGGUF(validBuilder()))
    }

    func testTruncationAtManyCutPoints() throws {
        let bytes = validBuilder().bytes()
        let file = try openGGUF(validBuilder())
        // Cuts inside the magic, version, counts, metadata, tensor infos, and the data section.
        var cuts = [1, 3, 4, 6, 8, 12, 20, 24, 30, 40, 60, 100, file.dataOffset - 1, file.dataOffset + 1, bytes.count - 1]
        cuts += stride(from: 0, to: bytes.count, by: 7)
        for cut in Set(cuts).sorted() where cut > 0 && cut < bytes.count {
            let path = temporaryPath("cut-\(cut).gguf")
            try Data(bytes.prefix(cut)).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try GGUFFile(path: path), "cut at \(cut) of \(bytes.count)") { error in
                XCTAssertTrue(error is GGUFError, "cut at \(cut): \(error)")
            }
        }
    }

    func testEmptyFile() {
        let path = temporaryPath("empty.gguf")
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data()))
        XCTAssertThrowsError(try GGUFFile(path: path)) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
    }

    func testWrongMagicAndVersion() {
        var bytes = validBuilder().bytes()
        bytes[0] = UInt8(ascii: "X")
        expectError(bytes, "not a GGUF file")
        var b = validBuilder()
        b.version = 1
        expectError(b.bytes(), "version 1 is not supported")
        b.version = 4
        expectError(b.bytes(), "version 4 is not supported")
    }

    func testAbsurdCounts() {
        var bytes = validBuilder().bytes()
        bytes.replaceSubrange(8..<16, with: le(UInt64(1) << 60))
        expectError(bytes, "tensor count")
        bytes = validBuilder().bytes()
        bytes.replaceSubrange(16..<24, with: le(UInt64.max))
        expectError(bytes, "metadata count")

        // An array claiming 2^60 elements, and a string claiming 2^62 bytes.
        var b = GGUFBuilder()
        b.set("big", .array(.int32([1])))
        bytes = b.bytes()
        let countOffset = 24 + 8 + 3 + 4 + 4  // header, key length + "big", value type, element type
        bytes.replaceSubrange(countOffset..<countOffset + 8, with: le(UInt64(1) << 60))
        expectError(bytes, "claims")
        b = GGUFBuilder()
        b.set("s", .string("hello"))
        bytes = b.bytes()
        let lengthOffset = 24 + 8 + 1 + 4
        bytes.replaceSubrange(lengthOffset..<lengthOffset + 8, with: le(UInt64(1) << 62))
        expectError(bytes, "past the end")
    }

    func testAbsurdDimensions() {
        var b = GGUFBuilder()
        b.add("huge", dimensions: [1 << 50, 1], type: .F32, data: [])
        expectError(b.bytes(), "dimension 0")
        b = GGUFBuilder()
        b.add("product", dimensions: [1 << 30, 1 << 30], type: .F32, data: [])
        expectError(b.bytes(), "absurd element count")
        b = GGUFBuilder()
        b.tensors.append(.init(name: "many", dimensions: [1, 1, 1, 1, 1], type: 0, data: [0, 0, 0, 0]))
        expectError(b.bytes(), "5 dimensions")
        b = GGUFBuilder()
        b.add("zero", dimensions: [0], type: .F32, data: [])
        expectError(b.bytes(), "dimension 0 = 0")
        b = GGUFBuilder()
        b.add("ragged", dimensions: [33], type: .Q8_0, data: HandBuiltBlocks.q8_0().0)
        expectError(b.bytes(), "multiple of its block size 32")
    }

    func testOffsetPastEnd() {
        var b = GGUFBuilder()
        b.add("w", dimensions: [4], floats: [1, 2, 3, 4])
        // A tensor whose data is declared larger than what the file holds.
        b.tensors.append(.init(name: "x", dimensions: [1024], type: 0, data: [1, 2, 3, 4]))
        expectError(b.bytes(), "runs past the end")

        var bytes = validBuilder().bytes()
        // Patch tensor 'v''s offset (the last u64 of the tensor infos) to a huge value.
        let file = try? openGGUF(validBuilder())
        if let file {
            // 'v' is the last tensor info: its offset is the last non-padding u64 before the data section.
            let v = file.tensors[1]
            let needle = le(UInt64(v.offset))
            var at = file.dataOffset - 8
            while at > 0 && Array(bytes[at..<at + 8]) != needle { at -= 1 }
            bytes.replaceSubrange(at..<at + 8, with: le(UInt64(1) << 40))
            expectError(bytes, "past the end")
        }
    }

    func testUnknownTypes() {
        var b = GGUFBuilder()
        b.tensors.append(.init(name: "w", dimensions: [4], type: 99, data: [0, 0, 0, 0]))
        expectError(b.bytes(), "unknown ggml type 99")

        var bytes = validBuilder().bytes()
        let typeOffset = 24 + 8 + "general.architecture".utf8.count
        bytes.replaceSubrange(typeOffset..<typeOffset + 4, with: le(UInt32(77)))
        expectError(bytes, "unknown value type 77")

        b = GGUFBuilder()
        b.set("a", .array(.int32([1])))
        bytes = b.bytes()
        let elementTypeOffset = 24 + 8 + 1 + 4
        bytes.replaceSubrange(elementTypeOffset..<elementTypeOffset + 4, with: le(UInt32(13)))
        expectError(bytes, "array of unknown type 13")
    }

    func testDeeplyNestedArraysAreRefused() {
        var value = GGUFArray.int32([1])
        for _ in 0..<20 { value = .array([value]) }
        var b = GGUFBuilder()
        b.set("deep", .array(value))
        expectError(b.bytes(), "nests arrays deeper")
    }

    func testKnownButUnsupportedTypeIsNamedAtImport() throws {
        var b = GGUFBuilder()
        b.tensors.append(.init(name: "w", dimensions: [256], type: GGMLType.Q2_K.rawValue, data: [UInt8](repeating: 0, count: 84)))
        let file = try openGGUF(b)
        XCTAssertThrowsError(try file.data(of: file.tensors[0])) { error in
            XCTAssertTrue("\(error)".contains("Q2_K"), "\(error)")
        }
    }

    func testUnsupportedArchitectureIsNamed() throws {
        var b = GGUFBuilder()
        b.set("general.architecture", .string("mamba"))
        let file = try openGGUF(b)
        XCTAssertThrowsError(try file.importModel()) { error in
            XCTAssertTrue("\(error)".contains("architecture 'mamba' is not supported"), "\(error)")
        }
    }
}
