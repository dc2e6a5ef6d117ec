import Foundation
import XCTest
import Tensor
import TestSupport
import Transformer

/// Version 2 added int6: a file holding int6 says 2 (so version-1 readers refuse it by its version
/// instead of failing on an unknown format name), a file without int6 stays 1 (older builds still
/// read it), and this build reads both but refuses int6 in a file that claims version 1.
final class WeightFileVersionTests: XCTestCase {
    func write(int6: Bool) throws -> [UInt8] {
        let path = temporaryFile("version.sarvam")
        var g = SeededGenerator(seed: 8)
        var sources = [
            WeightFileTensorSource(
                name: "int8", matrix: g.floats(2 * 64).withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 2, cols: 64, format: .int8) })
        ]
        if int6 {
            sources.append(
                WeightFileTensorSource(
                    name: "int6",
                    matrix: g.floats(3 * 512).withUnsafeBufferPointer { QuantizedMatrix.quantize($0.baseAddress!, rows: 3, cols: 512, format: .int6) }))
        }
        try WeightFile.write(to: path, description: WeightFileFixture.description, tensors: sources)
        XCTAssertEqual(try WeightFile.open(path, verify: true).tensors.count, sources.count)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func expectError(_ bytes: [UInt8], _ expected: String, line: UInt = #line) throws {
        let path = temporaryFile("bad-version.sarvam")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try WeightFile.open(path), line: line) { error in
            XCTAssertTrue("\(error)".contains(expected), "'\(error)' should contain '\(expected)'", line: line)
        }
    }

    func testVersionFollowsTheFormats() throws {
        XCTAssertEqual(try write(int6: false)[8..<12], [1, 0, 0, 0])
        let bytes = try write(int6: true)
        XCTAssertEqual(bytes[8..<12], [2, 0, 0, 0])
        var claimsOne = bytes
        claimsOne[8] = 1
        try expectError(claimsOne, "tensor 'int6' is int6, which a version-1 file cannot hold")
        var future = bytes
        future[8] = 3
        try expectError(future, "version 3 is not supported (this build reads versions 1 to 2)")
    }

    func testInt6NeedsWholeSuperblocks() throws {
        let q = QuantizedMatrix.quantize([Float](repeating: 0.5, count: 512), rows: 2, cols: 256, format: .int6)
        var source = WeightFileTensorSource(name: "int6", matrix: q)
        source.cols = 128
        source.rows = 4
        XCTAssertThrowsError(
            try WeightFile.write(to: temporaryFile("cols.sarvam"), description: WeightFileFixture.description, tensors: [source])
        ) { error in
            XCTAssertTrue("\(error)".contains("int6 needs a positive multiple of 256 columns, found 128"), "\(error)")
        }
    }
}
