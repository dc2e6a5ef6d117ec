// One KV snapshot on disk: the keys and values of a chain of full blocks, Float16 or Float32 as the
// pool stores them, behind a header that says whose tokens they are and for which model and layout.
//
//   offset 0   magic "SARVAMKV" (8 bytes)
//          8   version, UInt32 little-endian (= KVSnapshotFile.version)
//         12   reserved, UInt32 (0)
//         16   header JSON length in bytes, UInt64 little-endian
//         24   header JSON (UTF-8), `KVSnapshotHeader`
//          …   XXH64 of every byte before it, UInt64 little-endian
//   blocks     blockCount × layout.blockBytes bytes, block after block
//
// The header carries each block's XXH64, so a reader that needs only the first k blocks reads and
// checks only those. A file whose size is not exactly header + blocks is truncated or padded.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

struct KVSnapshotHeader: Codable, Equatable {
    /// The weight file's checksum (`WeightFile.checksum`).
    var model: String
    var layout: KVCacheLayout
    var user: Int64
    var conversation: String
    /// blockCount × blockSize tokens.
    var tokens: [Int]
    var blockChecksums: [UInt64]
}

struct KVSnapshotFileError: Error, CustomStringConvertible {
    let path: String
    let message: String
    /// The file does not exist (deleted meanwhile): not damage.
    var missing = false
    var description: String { "\(path): \(message)" }
}

enum KVSnapshotFile {
    static let magic: [UInt8] = Array("SARVAMKV".utf8)
    static let version: UInt32 = 1
    static let prefixSize = 24

    /// Writes a snapshot to `path` through a temporary file renamed into place, so a crash leaves
    /// either no file or a whole one (a torn write is caught by the checksums all the same).
    /// Everything before the blocks: prefix, header JSON and its checksum.
    static func head(_ header: KVSnapshotHeader) throws -> [UInt8] {
        let json = try JSONEncoder().encode(header)
        var head = magic
        withUnsafeBytes(of: version.littleEndian) { head += $0 }
        withUnsafeBytes(of: UInt32(0)) { head += $0 }
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { head += $0 }
        head += json
        let checksum = head.withUnsafeBytes { XXH64.hash($0) }
        withUnsafeBytes(of: checksum.littleEndian) { head += $0 }
        return head
    }

    /// Writes `head` (from `head(_:)`) and the blocks; see `head` for the layout.
    static func write(path: String, head: [UInt8], blocks: UnsafeRawBufferPointer) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw KVSnapshotFileError(path: temporary, message: "cannot create: \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(temporary) }
        }
        try head.withUnsafeBytes { try writeAll(fd, $0, path: temporary) }
        try writeAll(fd, blocks, path: temporary)
        guard rename(temporary, path) == 0 else {
            throw KVSnapshotFileError(path: path, message: "cannot rename into place: \(String(cString: strerror(errno)))")
        }
        ok = true
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw KVSnapshotFileError(path: path, message: "write failed: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// An open snapshot whose header was checked (magic, version, checksum, exact file size).
    struct Reader {
        let path: String
        let fd: Int32
        let header: KVSnapshotHeader
        let dataOffset: Int
        let blockBytes: Int

        /// Opens `path` and checks its header; throws naming what is wrong.
        init(path: String) throws {
            func fail(_ message: String) -> KVSnapshotFileError { KVSnapshotFileError(path: path, message: message) }
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else {
                var error = fail("cannot open: \(String(cString: strerror(errno)))")
                error.missing = errno == ENOENT
                throw error
            }
            var ok = false
            defer { if !ok { _ = Glibc.close(fd) } }
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw fail("cannot stat: \(String(cString: strerror(errno)))") }
            let size = Int(info.st_size)
            guard size >= KVSnapshotFile.prefixSize + 8 else { throw fail("\(size) bytes, shorter than a header (truncated)") }
            var prefix = [UInt8](repeating: 0, count: KVSnapshotFile.prefixSize)
            try Self.read(fd, into: &prefix, at: 0, path: path)
            guard Array(prefix[0..<8]) == KVSnapshotFile.magic else { throw fail("not a KV snapshot (magic)") }
            let version = prefix.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) }
            guard version == KVSnapshotFile.version else { throw fail("version \(version), expected \(KVSnapshotFile.version)") }
            let length = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self)) }
            guard length <= UInt64(size - KVSnapshotFile.prefixSize - 8) else {
                throw fail("header of \(length) bytes past the end (truncated)")
            }
            var rest = [UInt8](repeating: 0, count: Int(length) + 8)
            try Self.read(fd, into: &rest, at: KVSnapshotFile.prefixSize, path: path)
            let stored = rest.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: Int(length), as: UInt64.self)) }
            var state = XXH64()
            prefix.withUnsafeBytes { state.update($0) }
            rest.withUnsafeBytes { state.update(UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
            guard state.digest() == stored else { throw fail("header checksum mismatch (damaged)") }
            let header: KVSnapshotHeader
            do { header = try JSONDecoder().decode(KVSnapshotHeader.self, from: Data(rest[0..<Int(length)])) } catch {
                throw fail("header JSON is invalid: \(error)")
            }
            let blockBytes = header.layout.blockBytes
            let blocks = header.blockChecksums.count
            guard blockBytes > 0, blocks > 0, header.tokens.count == blocks * header.layout.blockSize else {
                throw fail("header lists \(blocks) blocks for \(header.tokens.count) tokens (block size \(header.layout.blockSize))")
            }
            let dataOffset = KVSnapshotFile.prefixSize + Int(length) + 8
            guard size == dataOffset + blocks * blockBytes else {
                throw fail("\(size) bytes, expected \(dataOffset + blocks * blockBytes) for \(blocks) blocks (truncated or damaged)")
            }
            self.path = path
            self.fd = fd
            self.header = header
            self.dataOffset = dataOffset
            self.blockBytes = blockBytes
            ok = true
        }

        func close() { _ = Glibc.close(fd) }

        /// Reads the first `count` blocks to `destination`, checking each one's checksum.
        func readBlocks(_ count: Int, to destination: UnsafeMutableRawPointer) throws {
            precondition(count <= header.blockChecksums.count)
            for i in 0..<count {
                let p = destination + i * blockBytes
                try Self.read(fd, into: p, count: blockBytes, at: dataOffset + i * blockBytes, path: path)
                guard XXH64.hash(UnsafeRawBufferPointer(start: p, count: blockBytes)) == header.blockChecksums[i] else {
                    throw KVSnapshotFileError(path: path, message: "block \(i) checksum mismatch (damaged)")
                }
            }
        }

        private static func read(_ fd: Int32, into buffer: inout [UInt8], at offset: Int, path: String) throws {
            let count = buffer.count
            try buffer.withUnsafeMutableBytes { try read(fd, into: $0.baseAddress!, count: count, at: offset, path: path) }
        }

        private static func read(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) throws {
            var done = 0
            while done < count {
                let n = pread(fd, p + done, count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw KVSnapshotFileError(path: path, message: "short read at \(offset + done) (truncated)") }
                done += n
            }
        }
    }

    /// The checksum of each of `count` blocks of `blockBytes` bytes.
    static func blockChecksums(_ blocks: UnsafeRawBufferPointer, blockBytes: Int) -> [UInt64] {
        (0..<(blocks.count / blockBytes)).map { i in
            XXH64.hash(UnsafeRawBufferPointer(start: blocks.baseAddress! + i * blockBytes, count: blockBytes))
        }
    }
}
