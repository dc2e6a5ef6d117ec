import Foundation
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// A tensor to write: its directory entry plus a producer that emits its bytes in order (any chunking),
/// so that a converter can stream a large matrix row block by row block without holding it whole.
public struct WeightFileTensorSource {
    public var name: String
    public var format: WeightFormat
    public var rows: Int
    public var cols: Int
    public var produce: (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

    public init(
        name: String, format: WeightFormat, rows: Int, cols: Int,
        produce: @escaping (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) {
        self.name = name
        self.format = format
        self.rows = rows
        self.cols = cols
        self.produce = produce
    }

    /// Writes an existing matrix as is.
    public init(name: String, matrix: QuantizedMatrix) {
        let count = QuantizedMatrix.bytesPerRow(format: matrix.format, cols: matrix.cols) * matrix.rows
        self.init(name: name, format: matrix.format, rows: matrix.rows, cols: matrix.cols) { emit in
            try withExtendedLifetime(matrix.owner) { try emit(UnsafeRawBufferPointer(start: matrix.data, count: count)) }
        }
    }

    public var byteLength: Int { QuantizedMatrix.bytesPerRow(format: format, cols: cols) * rows }
}

public struct WeightFileWriteProgress: Sendable {
    /// 1-based number of the tensor being written, of `tensorCount`.
    public var tensorNumber: Int
    public var tensorCount: Int
    public var tensorName: String
    public var bytesWritten: Int
    public var totalBytes: Int
}

extension WeightFile {
    /// Writes a weight file: to `path + ".partial"` first, renamed over `path` only when complete and
    /// synced, so that a failed conversion (full disk, bad input) never leaves a half file under the
    /// final name. `progress` is called after each tensor.
    public static func write(
        to path: String, description: WeightFileDescription, tensors: [WeightFileTensorSource],
        progress: ((WeightFileWriteProgress) -> Void)? = nil
    ) throws {
        func fail(_ message: String) -> WeightFileError { WeightFileError(path: path, message: message) }
        try description.model.validate()
        var seen = Set<String>()
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw fail("tensor '\(t.name)' given twice") }
            guard t.rows > 0, t.cols > 0 else { throw fail("tensor '\(t.name)' has shape [\(t.rows), \(t.cols)]") }
            if !t.format.supports(cols: t.cols) {
                throw fail("tensor '\(t.name)': \(t.format.rawValue) needs \(t.format.columnRequirement) columns, found \(t.cols)")
            }
        }

        // Layout. Offsets are absolute; the header is sized with slack for the digits of the real offsets,
        // and checksums are fixed-width hex, so the final header (with checksums) fits the same room.
        let placeholder = String(repeating: "0", count: 16)
        func header(dataStart: Int) -> WeightFileHeader {
            var offset = dataStart
            func place(_ length: Int) -> Int {
                let at = offset
                offset = (offset + length + alignment - 1) / alignment * alignment
                return at
            }
            let tokenizer = WeightFileSection(
                offset: place(description.tokenizer.count), byteLength: description.tokenizer.count,
                checksum: placeholder)
            let infos = tensors.map { t in
                WeightFileTensorInfo(
                    name: t.name, shape: [t.rows, t.cols], format: t.format, offset: place(t.byteLength),
                    byteLength: t.byteLength, checksum: placeholder)
            }
            return WeightFileHeader(
                model: description.model, chatTemplate: description.chatTemplate, source: description.source,
                quantization: description.quantization, checksum: checksumName, tokenizer: tokenizer, tensors: infos)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let firstGuess = try encoder.encode(header(dataStart: 0)).count
        let room = firstGuess + 64 + 24 * (tensors.count + 1)  // each offset may gain digits
        let dataStart = (prefixSize + room + alignment - 1) / alignment * alignment
        var layout = header(dataStart: dataStart)
        guard try encoder.encode(layout).count <= dataStart - prefixSize else { throw fail("internal: header layout does not fit") }
        let totalBytes = (layout.tensors.last.map { $0.offset + $0.byteLength }) ?? (layout.tokenizer.offset + layout.tokenizer.byteLength)

        let partial = path + ".partial"
        let out = try FileWriter(path: partial, finalPath: path)
        var finished = false
        defer { if !finished { out.abandon() } }

        // Reserve the header area; it is rewritten at the end with the checksums.
        try out.pad(to: dataStart)
        layout.tokenizer.checksum = try description.tokenizer.withUnsafeBytes { bytes in
            try out.write(bytes)
            return XXH64.hex(XXH64.hash(bytes))
        }
        for (i, t) in tensors.enumerated() {
            let info = layout.tensors[i]
            try out.pad(to: info.offset)
            var hash = XXH64()
            var count = 0
            try t.produce { chunk in
                count += chunk.count
                guard count <= info.byteLength else {
                    throw fail("tensor '\(t.name)' produced more than its \(info.byteLength) bytes")
                }
                hash.update(chunk)
                try out.write(chunk)
            }
            guard count == info.byteLength else {
                throw fail("tensor '\(t.name)' produced \(count) bytes, expected \(info.byteLength)")
            }
            layout.tensors[i].checksum = XXH64.hex(hash.digest())
            progress?(
                WeightFileWriteProgress(
                    tensorNumber: i + 1, tensorCount: tensors.count, tensorName: t.name,
                    bytesWritten: out.position, totalBytes: totalBytes))
        }
        let json = try encoder.encode(layout)
        guard json.count <= dataStart - prefixSize else { throw fail("internal: final header (\(json.count) bytes) outgrew its room") }
        var prefix = [UInt8](repeating: 0, count: prefixSize)
        prefix.replaceSubrange(0..<8, with: magic)
        withUnsafeBytes(of: Self.version(for: tensors.map(\.format)).littleEndian) { prefix.replaceSubrange(8..<12, with: $0) }
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.replaceSubrange(16..<24, with: $0) }
        try out.finish(header: prefix + Array(json))
        finished = true
    }
}

/// Buffered POSIX writer with explicit error checks (a full disk surfaces as ENOSPC from write or fsync).
final class FileWriter {
    let path: String
    let finalPath: String
    private let fd: Int32
    private var buffer: UnsafeMutableRawPointer
    private let capacity = 4 << 20
    private var used = 0
    private(set) var position = 0

    init(path: String, finalPath: String) throws {
        self.path = path
        self.finalPath = finalPath
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw WeightFileError(path: finalPath, message: "cannot create \(path): \(errnoText())") }
        buffer = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var n = bytes.count
        position += n
        while n > 0 {
            if used == capacity { try flush() }
            let take = min(n, capacity - used)
            (buffer + used).copyMemory(from: p, byteCount: take)
            used += take; p += take; n -= take
        }
    }

    func pad(to offset: Int) throws {
        precondition(offset >= position)
        let zeros = [UInt8](repeating: 0, count: min(offset - position, 4096))
        while position < offset {
            try zeros.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0.prefix(offset - position))) }
        }
    }

    private func flush() throws {
        var done = 0
        while done < used {
            let n = Glibc.write(fd, buffer + done, used - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw writeError(errno) }
            done += n
        }
        used = 0
    }

    private func writeError(_ code: Int32) -> WeightFileError {
        let hint = code == ENOSPC ? " (disk full: \(position) bytes were being written; free space and convert again)" : ""
        return WeightFileError(path: finalPath, message: "cannot write \(path): \(errnoText(code))\(hint)")
    }

    func finish(header: [UInt8]) throws {
        try flush()
        var done = 0
        while done < header.count {
            let n = header.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, header.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw writeError(errno) }
            done += n
        }
        guard fsync(fd) == 0 else { throw writeError(errno) }
        guard close(fd) == 0 else { throw writeError(errno) }
        guard rename(path, finalPath) == 0 else {
            let message = errnoText()
            unlink(path)
            throw WeightFileError(path: finalPath, message: "cannot rename \(path) into place: \(message)")
        }
    }

    /// Removes the partial file after a failure.
    func abandon() {
        close(fd)
        unlink(path)
    }
}
