import Foundation
import XCTest
import Tensor
import TestSupport
import Transformer

/// Shared fixture: a small weight file with one tensor of each format.
enum WeightFileFixture {
    static let configuration = ModelConfiguration(
        architecture: .llama, numHiddenLayers: 1, hiddenSize: 64, numAttentionHeads: 4, numKeyValueHeads: 2,
        headDim: 16, intermediateSize: 96, vocabSize: 10, ropeTheta: 10_000, ropeLayout: .interleaved,
        rmsNormEps: 1e-5, maxPositionEmbeddings: 128, tieWordEmbeddings: true, attentionBias: false)

    static let description = WeightFileDescription(
        model: configuration, tokenizer: Data(#"{"kind":"bpe","tokens":["a","b"]}"#.utf8),
        chatTemplate: "{{ messages }}", source: "test fixture", quantization: "test")

    /// name → (format, rows, cols, float values)
    static func matrices() -> [(String, WeightFormat, Int, Int, [Float])] {
        var g = SeededGenerator(seed: 3)
        return [
            ("norm", .f32, 1, 64, g.floats(64)),
            ("half", .f16, 3, 40, g.floats(120)),
            ("int8", .int8, 5, 96, g.floats(480)),
            ("int4", .int4, 2, 288, g.floats(576)),  // 288 = one superblock + a truncated one of 1 group
        ]
    }

    static func write(to path: String, progress: ((WeightFileWriteProgress) -> Void)? = nil) throws -> [String: QuantizedMatrix] {
        var out: [String: QuantizedMatrix] = [:]
        var sources: [WeightFileTensorSource] = []
        for (name, format, rows, cols, values) in matrices() {
            let q = values.withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: format) }
            out[name] = q
            sources.append(WeightFileTensorSource(name: name, matrix: q))
        }
        try WeightFile.write(to: path, description: description, tensors: sources, progress: progress)
        return out
    }
}

func temporaryFile(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-weightfile-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(UUID().uuidString + "-" + name).path
}

final class WeightFileRoundTripTests: XCTestCase {
    func testWriteThenOpenGivesTheSameDescriptionAndBytes() throws {
        let path = temporaryFile("round.sarvam")
        var steps: [Int] = []
        let written = try WeightFileFixture.write(to: path) { steps.append($0.tensorNumber) }
        XCTAssertEqual(steps, [1, 2, 3, 4])
        let file = try WeightFile.open(path, verify: true)
        XCTAssertEqual(file.description, WeightFileFixture.description)
        XCTAssertEqual(file.tensors.map(\.name), ["norm", "half", "int8", "int4"])
        for (name, q) in written {
            let t = try file.tensor(named: name)
            XCTAssertEqual([t.rows, t.cols], [q.rows, q.cols], name)
            XCTAssertEqual(t.format, q.format, name)
            XCTAssertEqual(Int(bitPattern: t.data) % 64, 0, "\(name) is 64-byte aligned in the mapping")
            let n = QuantizedMatrix.bytesPerRow(format: q.format, cols: q.cols) * q.rows
            XCTAssertEqual(memcmp(t.data, q.data, n), 0, "\(name) bytes")
            XCTAssertNotNil(t.owner, "the mapping's owner keeps it alive")
        }
        for info in file.tensors { XCTAssertEqual(info.offset % 64, 0) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".partial"))
    }

    func testTensorsOutliveTheWeightFileObject() throws {
        let path = temporaryFile("owner.sarvam")
        _ = try WeightFileFixture.write(to: path)
        var t: QuantizedMatrix?
        do { t = try WeightFile.open(path).tensor(named: "norm") }
        var row = [Float](repeating: 0, count: 64)
        t!.dequantizeRow(0, into: &row)
        XCTAssertEqual(row, WeightFileFixture.matrices()[0].4)
    }

    func testUnknownTensorNameIsAnError() throws {
        let path = temporaryFile("names.sarvam")
        _ = try WeightFileFixture.write(to: path)
        let file = try WeightFile.open(path)
        XCTAssertThrowsError(try file.tensor(named: "nope")) { XCTAssertTrue("\($0)".contains("'nope' is not in the file"), "\($0)") }
    }

    func testWriteFailuresLeaveNoFile() throws {
        let path = temporaryFile("short.sarvam")
        let short = WeightFileTensorSource(name: "x", format: .f32, rows: 1, cols: 8) { emit in
            try [Float](repeating: 1, count: 4).withUnsafeBytes { try emit($0) }
        }
        XCTAssertThrowsError(try WeightFile.write(to: path, description: WeightFileFixture.description, tensors: [short])) {
            XCTAssertTrue("\($0)".contains("produced 16 bytes, expected 32"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".partial"))
        XCTAssertThrowsError(try WeightFile.write(to: "/nonexistent-dir/x.sarvam", description: WeightFileFixture.description, tensors: []))
        {
            XCTAssertTrue("\($0)".contains("cannot create"), "\($0)")
        }
        XCTAssertThrowsError(
            try WeightFile.write(
                to: path, description: WeightFileFixture.description,
                tensors: [WeightFileTensorSource(name: "q", format: .int8, rows: 1, cols: 40) { _ in }])
        ) {
            XCTAssertTrue("\($0)".contains("multiple of 32"), "\($0)")
        }
    }

    /// A disk that fills up: /dev/full fails every write with ENOSPC (when the platform has it).
    func testFullDiskIsReported() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { return }
        // Writing goes to "<path>.partial": point that name at /dev/full through a symlink.
        let path = temporaryFile("full.sarvam")
        try FileManager.default.createSymbolicLink(atPath: path + ".partial", withDestinationPath: "/dev/full")
        let big = WeightFileTensorSource(name: "big", format: .f32, rows: 2048, cols: 1024) { emit in
            let zeros = [Float](repeating: 0, count: 1024)
            for _ in 0..<2048 { try zeros.withUnsafeBytes { try emit($0) } }
        }
        XCTAssertThrowsError(try WeightFile.write(to: path, description: WeightFileFixture.description, tensors: [big])) {
            XCTAssertTrue("\($0)".contains("disk full") || "\($0)".contains("No space"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }
}

final class WeightFileCorruptionTests: XCTestCase {
    func fixtureBytes() throws -> [UInt8] {
        let path = temporaryFile("corrupt-source.sarvam")
        _ = try WeightFileFixture.write(to: path)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func expectError(_ bytes: [UInt8], verify: Bool = false, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws
    {
        let path = temporaryFile("bad.sarvam")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try WeightFile.open(path, verify: verify), file: file, line: line) { error in
            XCTAssertTrue(error is WeightFileError, "\(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(expected), "'\(error)' should contain '\(expected)'", file: file, line: line)
            XCTAssertFalse("\(error)".contains("\n"), "one line", file: file, line: line)
        }
    }

    func headerRange(_ bytes: [UInt8]) -> Range<Int> {
        let length = bytes[16..<24].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        return 24..<24 + length
    }

    func testTruncatedAtSeveralPoints() throws {
        let bytes = try fixtureBytes()
        let header = headerRange(bytes)
        for cut in [1, 7, 20, 23, header.lowerBound + 10, header.upperBound - 1, header.upperBound + 1, bytes.count / 2, bytes.count - 1] {
            try expectError(
                Array(bytes.prefix(cut)), cut < 24 ? "shorter than" : (cut < header.upperBound ? "header length" : "past the end"))
        }
    }

    func testFlippedDataByteIsFoundByVerify() throws {
        var bytes = try fixtureBytes()
        bytes[bytes.count - 5] ^= 0x10
        let path = temporaryFile("flipped.sarvam")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertNoThrow(try WeightFile.open(path, verify: false), "a normal load checks structure only")
        try expectError(bytes, verify: true, "checksum mismatch in tensor 'int4'")
    }

    func testBadMagicVersionAndHeaderJSON() throws {
        var bytes = try fixtureBytes()
        bytes[0] = UInt8(ascii: "G")
        try expectError(bytes, "not a Sarvam weight file")
        bytes = try fixtureBytes()
        bytes[8] = 9
        try expectError(bytes, "version 9 is not supported")
        bytes = try fixtureBytes()
        let header = headerRange(bytes)
        bytes[header.lowerBound] = UInt8(ascii: "x")
        try expectError(bytes, "header JSON is invalid")
        bytes = try fixtureBytes()
        bytes[16] = 0xFF; bytes[17] = 0xFF; bytes[18] = 0xFF
        try expectError(bytes, "header length")
    }

    /// Edits the header JSON in place (same length), e.g. to point a tensor past the end.
    func editHeader(_ bytes: [UInt8], _ edit: (String) -> String) -> [UInt8] {
        let range = headerRange(bytes)
        let text = String(decoding: bytes[range], as: UTF8.self)
        let edited = Array(edit(text).utf8)
        precondition(edited.count == range.count, "edit must keep the header length")
        var out = bytes
        out.replaceSubrange(range, with: edited)
        return out
    }

    func testOffsetsAndSizesAreChecked() throws {
        let bytes = try fixtureBytes()
        let file = try WeightFile.open(
            {
                let p = temporaryFile("ok.sarvam"); try! Data(bytes).write(to: URL(fileURLWithPath: p)); return p
            }())
        let last = file.tensors.last!
        let digits = String(last.offset)
        let huge = String(repeating: "9", count: digits.count)
        try expectError(
            editHeader(bytes) { $0.replacingOccurrences(of: "\"offset\":\(digits)", with: "\"offset\":\(huge)") }, "tensor 'int4'")
        let length = String(last.byteLength)
        try expectError(
            editHeader(bytes) {
                $0.replacingOccurrences(
                    of: "\"byteLength\":\(length)", with: "\"byteLength\":\(String(repeating: "1", count: length.count))")
            },
            "expected \(last.byteLength)")
        try expectError(
            editHeader(bytes) { $0.replacingOccurrences(of: "\"format\":\"int4\"", with: "\"format\":\"int3\"") }, "header JSON is invalid")
        // Point 'int8' at 'half''s bytes (same digit count needed: pad with leading zeros is not JSON, so pick a tensor pair).
        let half = file.info(named: "half")!, int8 = file.info(named: "int8")!
        if String(half.offset).count == String(int8.offset).count {
            try expectError(
                editHeader(bytes) { $0.replacingOccurrences(of: "\"offset\":\(int8.offset)", with: "\"offset\":\(half.offset)") },
                "overlaps")
        }
        try expectError(
            editHeader(bytes) { $0.replacingOccurrences(of: "\"ropeLayout\":\"interleaved\"", with: "\"ropeLayout\":\"interleaveX\"") },
            "ropeLayout")
    }
}

final class ChecksumTests: XCTestCase {
    func hash(_ s: String) -> String { XXH64.hex(Array(s.utf8).withUnsafeBytes { XXH64.hash($0) }) }

    /// Published XXH64 (seed 0) test vectors.
    func testKnownVectors() {
        XCTAssertEqual(hash(""), "ef46db3751d8e999")
        XCTAssertEqual(hash("abc"), "44bc2cf5ad770999")
        XCTAssertEqual(hash("Nobody inspects the spammish repetition"), "fbcea83c8a378bf1")
    }

    func testStreamingEqualsOneShot() {
        var g = SeededGenerator(seed: 11)
        let data = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &g) }
        let oneShot = data.withUnsafeBytes { XXH64.hash($0) }
        for split in [1, 3, 7, 31, 32, 33, 100] {
            var state = XXH64()
            data.withUnsafeBytes { raw in
                var i = 0
                while i < raw.count {
                    let n = min(split, raw.count - i)
                    state.update(UnsafeRawBufferPointer(rebasing: raw[i..<i + n]))
                    i += n
                }
            }
            XCTAssertEqual(state.digest(), oneShot, "chunks of \(split)")
        }
    }
}

final class ModelConfigurationTests: XCTestCase {
    func testValidConfigurationAndCamelCaseKeys() throws {
        let c = WeightFileFixture.configuration
        XCTAssertNoThrow(try c.validate())
        let json = String(decoding: try JSONEncoder().encode(c), as: UTF8.self)
        for key in ["numHiddenLayers", "numKeyValueHeads", "ropeTheta", "rmsNormEps", "tieWordEmbeddings", "attentionBias"] {
            XCTAssertTrue(json.contains("\"\(key)\""), key)
        }
        XCTAssertEqual(try JSONDecoder().decode(ModelConfiguration.self, from: Data(json.utf8)), c)
    }

    func testInvalidConfigurationsNameTheField() {
        func check(_ change: (inout ModelConfiguration) -> Void, _ expected: String) {
            var c = WeightFileFixture.configuration
            change(&c)
            XCTAssertThrowsError(try c.validate()) { XCTAssertTrue("\($0)".contains(expected), "'\($0)' should contain '\(expected)'") }
        }
        check({ $0.numHiddenLayers = 0 }, "numHiddenLayers is 0")
        check({ $0.numKeyValueHeads = 3 }, "multiple of numKeyValueHeads")
        check({ $0.headDim = 15 }, "headDim is 15")
        check({ $0.rmsNormEps = 0 }, "rmsNormEps")
        check({ $0.ropeTheta = -1 }, "ropeTheta")
        check({ $0.vocabSize = 1 << 30 }, "implausibly large")
    }

    /// An unknown architecture or RoPE layout fails when the configuration is decoded, with a message
    /// that names the field, the value found and the values expected.
    func testUnknownArchitectureAndRopeLayoutAreNamed() throws {
        let json = String(decoding: try JSONEncoder().encode(WeightFileFixture.configuration), as: UTF8.self)
        let cases = [
            ("architecture", "llama", "gpt2", "'llama', 'qwen2'"), ("ropeLayout", "interleaved", "neox", "'interleaved', 'halves'"),
        ]
        for (field, stored, unknown, expected) in cases {
            let edited = json.replacingOccurrences(of: "\"\(field)\":\"\(stored)\"", with: "\"\(field)\":\"\(unknown)\"")
            XCTAssertNotEqual(edited, json, "the fixture stores \(field) \(stored)")
            XCTAssertThrowsError(try JSONDecoder().decode(ModelConfiguration.self, from: Data(edited.utf8))) { error in
                guard case DecodingError.dataCorrupted(let context) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(context.debugDescription, "\(field) is '\(unknown)', expected one of \(expected)")
            }
        }
    }
}
