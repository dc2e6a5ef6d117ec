import Foundation
import Tensor

// Sarvam's weight file: one file, memory-mapped at start-up, from which every weight is borrowed
// without a copy.
//
//   offset 0   magic "SARVAMWT" (8 bytes)
//          8   version, UInt32 little-endian: 1, or 2 when a tensor is int6 (a format that version-1
//              readers do not know, so they refuse the file by its version; `WeightFile.version(for:)`)
//         12   reserved, UInt32 (0)
//         16   header JSON length in bytes, UInt64 little-endian
//         24   header JSON (UTF-8), `WeightFileHeader` below: model configuration, chat template, source,
//              quantization policy, then the directory of sections (tokenizer JSON, tensors), each with
//              offset (absolute, in the file), byte length and XXH64 checksum (16 hex digits)
//          …   zero padding up to the first section
//   sections   the tokenizer description JSON (stored byte for byte, so that the Tokenizer module decodes
//              it without a re-encoding step), then each tensor's rows (Tensor's WeightFormat layouts,
//              `QuantizedMatrix.bytesPerRow(format:cols:) * rows` bytes), every section starting at a
//              multiple of 64 bytes so that kernels can borrow weights aligned for vector loads.

/// What the weight file says about the model besides its tensors.
public struct WeightFileDescription: Sendable, Equatable {
    public var model: ModelConfiguration
    /// Raw JSON of the Tokenizer module's `TokenizerDescription` (decoded there; Transformer does not depend on Tokenizer).
    public var tokenizer: Data
    /// Jinja chat template from the source model, if it had one.
    public var chatTemplate: String?
    /// Where the weights came from (input path, format, file size).
    public var source: String
    /// The quantization policy applied at conversion, in words.
    public var quantization: String

    public init(model: ModelConfiguration, tokenizer: Data, chatTemplate: String?, source: String, quantization: String = "") {
        self.model = model
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.source = source
        self.quantization = quantization
    }
}

/// One tensor's entry in the directory. Shape is [rows, cols], cols contiguous (1-D tensors: rows = 1).
public struct WeightFileTensorInfo: Codable, Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var format: WeightFormat
    public var offset: Int
    public var byteLength: Int
    public var checksum: String

    public var rows: Int { shape.count == 2 ? shape[0] : 0 }
    public var cols: Int { shape.count == 2 ? shape[1] : 0 }
}

struct WeightFileSection: Codable, Equatable {
    var offset: Int
    var byteLength: Int
    var checksum: String
}

struct WeightFileHeader: Codable {
    var model: ModelConfiguration
    var chatTemplate: String?
    var source: String
    var quantization: String
    /// Names the checksum function so that a future version can change it.
    var checksum: String
    var tokenizer: WeightFileSection
    var tensors: [WeightFileTensorInfo]
}

public struct WeightFileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

public final class WeightFile: @unchecked Sendable {
    public static let magic: [UInt8] = Array("SARVAMWT".utf8)
    /// The newest version this build reads and writes.
    public static let version: UInt32 = 2
    /// The formats each version may hold: version 2 added int6 (Q6_K's values).
    static let formatsOfVersion1: Set<WeightFormat> = [.f32, .f16, .int8, .int5, .int4]

    /// The version a file holding `formats` is written with: the oldest whose readers know them all,
    /// so a file without int6 still opens in builds that predate it.
    public static func version(for formats: some Sequence<WeightFormat>) -> UInt32 {
        formats.allSatisfy { formatsOfVersion1.contains($0) } ? 1 : 2
    }
    public static let alignment = 64
    static let prefixSize = 24
    static let checksumName = "xxh64"

    public let path: String
    public let description: WeightFileDescription
    /// Directory in file order.
    public let tensors: [WeightFileTensorInfo]
    public var fileSize: Int { mapping.size }
    /// How the weights are held (a request for huge pages may have fallen back to a mapping).
    public var residency: FileResidency { mapping.residency }
    let mapping: MappedFile
    let tokenizerSection: WeightFileSection
    private let index: [String: Int]
    /// XXH64 of the header JSON (16 hex digits), which lists every section's checksum: names these
    /// exact weights and conversion without reading them (KV snapshots are keyed by it).
    public let checksum: String

    private init(
        path: String, description: WeightFileDescription, tensors: [WeightFileTensorInfo],
        mapping: MappedFile, tokenizerSection: WeightFileSection, index: [String: Int], checksum: String
    ) {
        self.checksum = checksum
        self.path = path
        self.description = description
        self.tensors = tensors
        self.mapping = mapping
        self.tokenizerSection = tokenizerSection
        self.index = index
    }

    /// Maps the file and validates everything a reader relies on: magic, version, header JSON, the model
    /// configuration, every section inside the file and aligned, byte lengths matching shapes and formats.
    /// `verify` also checks every checksum (reads the whole file). `residency`: mapped, or read into
    /// huge pages (for serving: faster decode; `progress(bytes read, size)` meanwhile).
    public static func open(
        _ path: String, verify: Bool = false, residency: FileResidency = .mapped, progress: ((Int, Int) -> Void)? = nil
    ) throws -> WeightFile {
        func fail(_ message: String) -> WeightFileError { WeightFileError(path: path, message: message) }
        let mapping: MappedFile
        do { mapping = try MappedFile.open(path: path, residency: residency, progress: progress) } catch let error as MappedFileError {
            throw fail(error.message)
        }
        let size = mapping.size
        let base = mapping.base
        guard size >= prefixSize else {
            throw fail("file is \(size) bytes, shorter than the \(prefixSize)-byte prefix (truncated?)")
        }
        let magicFound = Array(UnsafeRawBufferPointer(start: base, count: 8))
        guard magicFound == magic else {
            let shown = magicFound.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            throw fail("not a Sarvam weight file: magic is \"\(shown)\", expected \"SARVAMWT\"")
        }
        let version = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard (1...Self.version).contains(version) else {
            throw fail(
                "weight file version \(version) is not supported (this build reads versions 1 to \(Self.version)); convert the model again with tools/convert, or update Sarvam"
            )
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        guard headerLength > 0, headerLength <= UInt64(size - prefixSize) else {
            throw fail("header length \(headerLength) does not fit in the \(size)-byte file (truncated?)")
        }
        let headerData = Data(bytes: base + prefixSize, count: Int(headerLength))
        let header: WeightFileHeader
        do {
            header = try JSONDecoder().decode(WeightFileHeader.self, from: headerData)
        } catch {
            throw fail("header JSON is invalid: \(decodingErrorText(error))")
        }
        guard header.checksum == checksumName else {
            throw fail("checksum function '\(header.checksum)' is unknown (expected '\(checksumName)')")
        }
        do { try header.model.validate() } catch { throw fail("\(error)") }
        let dataStart = prefixSize + Int(headerLength)

        func checkSection(_ what: String, offset: Int, length: Int) throws {
            guard offset >= dataStart, offset % alignment == 0 else {
                throw fail(
                    "\(what) starts at offset \(offset), expected a multiple of \(alignment) after the header (which ends at \(dataStart))")
            }
            let (end, overflow) = offset.addingReportingOverflow(length)
            guard length >= 0, !overflow, end <= size else {
                throw fail("\(what) spans bytes \(offset)..<\(offset &+ length), past the end of the \(size)-byte file (truncated?)")
            }
        }
        try checkSection("tokenizer section", offset: header.tokenizer.offset, length: header.tokenizer.byteLength)
        var index: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() {
            guard index[t.name] == nil else { throw fail("tensor '\(t.name)' appears twice in the directory") }
            index[t.name] = i
            guard t.shape.count == 2, t.shape[0] > 0, t.shape[1] > 0, t.shape[0] <= 1 << 32, t.shape[1] <= 1 << 32 else {
                throw fail("tensor '\(t.name)' has shape \(t.shape), expected [rows, cols] with positive sizes")
            }
            guard version >= Self.version(for: [t.format]) else {
                throw fail("tensor '\(t.name)' is \(t.format.rawValue), which a version-\(version) file cannot hold (it needs version 2)")
            }
            guard t.format.supports(cols: t.cols) else {
                throw fail("tensor '\(t.name)' is \(t.format.rawValue) with \(t.cols) columns, expected \(t.format.columnRequirement)")
            }
            let (expected, overflow) = QuantizedMatrix.bytesPerRow(format: t.format, cols: t.cols).multipliedReportingOverflow(by: t.rows)
            guard !overflow, t.byteLength == expected else {
                throw fail("tensor '\(t.name)' has \(t.byteLength) bytes, expected \(expected) for \(t.format.rawValue) \(t.shape)")
            }
            try checkSection("tensor '\(t.name)'", offset: t.offset, length: t.byteLength)
        }
        // Sections must not share bytes (a corrupted directory could alias two tensors).
        let spans =
            ([("tokenizer section", header.tokenizer.offset, header.tokenizer.byteLength)]
            + header.tensors.map { ("tensor '\($0.name)'", $0.offset, $0.byteLength) }).sorted { $0.1 < $1.1 }
        for (a, b) in zip(spans, spans.dropFirst()) where a.1 + a.2 > b.1 {
            throw fail("\(a.0) (bytes \(a.1)..<\(a.1 + a.2)) overlaps \(b.0) (from byte \(b.1))")
        }
        let tokenizer = Data(bytes: base + header.tokenizer.offset, count: header.tokenizer.byteLength)
        let description = WeightFileDescription(
            model: header.model, tokenizer: tokenizer, chatTemplate: header.chatTemplate,
            source: header.source, quantization: header.quantization)
        let file = WeightFile(
            path: path, description: description, tensors: header.tensors, mapping: mapping,
            tokenizerSection: header.tokenizer, index: index,
            checksum: XXH64.hex(headerData.withUnsafeBytes { XXH64.hash($0) }))
        if verify { try file.verifyChecksums() }
        return file
    }

    /// Recomputes every section's XXH64 and throws on the first mismatch.
    public func verifyChecksums() throws {
        func check(_ what: String, _ offset: Int, _ length: Int, _ expected: String) throws {
            let found = XXH64.hex(XXH64.hash(UnsafeRawBufferPointer(start: mapping.base + offset, count: length)))
            guard found == expected.lowercased() else {
                throw WeightFileError(
                    path: path, message: "checksum mismatch in \(what): expected \(expected), found \(found) (file corrupted)")
            }
        }
        try check("tokenizer section", tokenizerSection.offset, tokenizerSection.byteLength, tokenizerSection.checksum)
        for t in tensors { try check("tensor '\(t.name)'", t.offset, t.byteLength, t.checksum) }
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func info(named name: String) -> WeightFileTensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor's bytes, borrowed from the mapping (the matrix's `owner` keeps the mapping alive).
    public func tensor(named name: String) throws -> QuantizedMatrix {
        guard let i = index[name] else {
            throw WeightFileError(path: path, message: "tensor '\(name)' is not in the file (\(tensors.count) tensors)")
        }
        let t = tensors[i]
        return QuantizedMatrix(format: t.format, rows: t.rows, cols: t.cols, data: mapping.base + t.offset, owner: mapping)
    }
}

/// DecodingError's description is long and nested; keep the part that names the problem and the path.
func decodingErrorText(_ error: Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
        let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return p.isEmpty ? "" : " at \(p)"
    }
    switch error {
    case .dataCorrupted(let c): return "\(c.debugDescription)\(path(c))"
    case .keyNotFound(let key, let c): return "missing key '\(key.stringValue)'\(path(c))"
    case .typeMismatch(_, let c): return "\(c.debugDescription)\(path(c))"
    case .valueNotFound(_, let c): return "\(c.debugDescription)\(path(c))"
    @unknown default: return "\(error)"
    }
}
