import Foundation
import XCTest
import Tensor
import TestSupport
import Transformer

/// Weights read into huge pages (`FileResidency.hugePages`) against the plain mapping of the same
/// file: the same bytes, a 2 MB aligned start advised for transparent huge pages, progress, one
/// copy per unchanged file in a process, and clear errors.
final class FileResidencyTests: XCTestCase {
    /// A file of `count` seeded bytes (not a multiple of a page, so the tail is covered).
    private func randomFile(_ count: Int, seed: UInt64) throws -> (String, [UInt8]) {
        var g = SeededGenerator(seed: seed)
        let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: g.next()) }
        let path = temporaryFile("resident.bin")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, bytes)
    }

    func testHugePagesHoldTheFilesBytes() throws {
        let (path, bytes) = try randomFile(5 << 20 + 12_345, seed: 7)
        var reported: [Int] = []
        let file = try MappedFile(path: path, residency: .hugePages) { done, size in
            XCTAssertEqual(size, bytes.count)
            reported.append(done)
        }
        XCTAssertEqual(file.residency, .hugePages)
        XCTAssertEqual(file.size, bytes.count)
        XCTAssertEqual(Int(bitPattern: file.base) % (2 << 20), 0, "the copy starts on a 2 MB boundary")
        XCTAssertTrue(bytes.withUnsafeBytes { memcmp($0.baseAddress!, file.base, bytes.count) == 0 }, "the copy differs from the file")
        XCTAssertEqual(reported.last, bytes.count, "progress ends at the file's size")
        XCTAssertEqual(reported, reported.sorted(), "progress only grows")
        let mapped = try MappedFile(path: path)
        XCTAssertEqual(mapped.residency, .mapped)
        XCTAssertEqual(memcmp(mapped.base, file.base, bytes.count), 0)
    }

    /// The kernel's own account of the region (/proc/self/smaps): eligible for huge pages where
    /// transparent huge pages are not switched off.
    func testTheCopyIsAdvisedForHugePages() throws {
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        guard mode.contains("[always]") || mode.contains("[madvise]") else {
            throw XCTSkip("transparent huge pages are off on this machine (\(mode.trimmingCharacters(in: .whitespacesAndNewlines)))")
        }
        let (path, _) = try randomFile(6 << 20, seed: 8)
        let file = try MappedFile(path: path, residency: .hugePages)
        let address = UInt(bitPattern: file.base)
        var inRegion = false, eligible: String?
        for line in try procLines("/proc/self/smaps") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let ends = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inRegion = ends.count == 2 && ends[0] <= address && address < ends[1]
            } else if inRegion, fields.first == "THPeligible:" {
                eligible = fields.count > 1 ? String(fields[1]) : nil
            }
        }
        XCTAssertEqual(eligible, "1", "the region holding the copy is not eligible for huge pages")
        withExtendedLifetime(file) {}
    }

    /// The lines of a /proc file (its size reads as 0, so it is read line by line to the end).
    private func procLines(_ path: String) throws -> [Substring] {
        guard let file = fopen(path, "r") else { throw XCTSkip("cannot read \(path)") }
        defer { fclose(file) }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), file) != nil { text += String(cString: buffer) }
        return text.split(separator: "\n")
    }

    func testOneCopyPerUnchangedFile() throws {
        let (path, _) = try randomFile(3 << 20, seed: 9)
        let first = try MappedFile.open(path: path, residency: .hugePages)
        let second = try MappedFile.open(path: path, residency: .hugePages)
        XCTAssertTrue(first === second, "a second opening of the unchanged file read it again")
        XCTAssertFalse(first === (try MappedFile.open(path: path, residency: .mapped)), "a mapping is its own")
        // Rewritten (another size and time): read again, and the new bytes are what it holds.
        let (other, bytes) = try randomFile(3 << 20 + 1, seed: 10)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: other, toPath: path)
        let third = try MappedFile.open(path: path, residency: .hugePages)
        XCTAssertFalse(first === third, "a changed file was served from the old copy")
        XCTAssertTrue(bytes.withUnsafeBytes { memcmp($0.baseAddress!, third.base, bytes.count) == 0 })
    }

    func testWeightFileInHugePagesGivesTheSameTensors() throws {
        let path = temporaryFile("resident.sarvam")
        let written = try WeightFileFixture.write(to: path)
        let file = try WeightFile.open(path, verify: true, residency: .hugePages)
        XCTAssertEqual(file.residency, .hugePages)
        for (name, q) in written {
            let t = try file.tensor(named: name)
            let n = QuantizedMatrix.bytesPerRow(format: q.format, cols: q.cols) * q.rows
            XCTAssertEqual(memcmp(t.data, q.data, n), 0, "\(name) bytes")
        }
    }

    func testMissingAndEmptyFilesAreClearErrors() throws {
        let missing = temporaryFile("missing.bin")
        XCTAssertThrowsError(try MappedFile(path: missing, residency: .hugePages)) {
            XCTAssertTrue("\($0)".contains("cannot open"), "\($0)")
        }
        let empty = temporaryFile("empty.bin")
        FileManager.default.createFile(atPath: empty, contents: Data())
        XCTAssertThrowsError(try MappedFile(path: empty, residency: .hugePages)) {
            XCTAssertTrue("\($0)".contains("file is empty"), "\($0)")
        }
    }
}
