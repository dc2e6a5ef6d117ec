#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// How a file's bytes are held in memory.
public enum FileResidency: String, Sendable, CaseIterable {
    /// mmap of the file: pages come from the page cache on first touch, shared by every process
    /// and every opening of the file, in 4 KB pages.
    case mapped
    /// The file read once into anonymous memory aligned to and advised for 2 MB transparent huge
    /// pages: decoding streams every weight per token, and with 4 KB pages each page's first line
    /// also waits on a page walk (measured in docs/kernels.md). Falls back to
    /// `mapped` when the memory cannot be had; without transparent huge pages (`never`) it is a
    /// plain copy in 4 KB pages.
    case hugePages = "huge-pages"
}

/// A whole file in memory, read-only: mapped (mmap PROT_READ, MAP_PRIVATE) or read into huge pages
/// (`FileResidency`). Weights and GGUF tensors borrow straight from `base`; whoever borrows keeps
/// this object alive as `owner`.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int
    /// What the file got (`hugePages` may have fallen back to `mapped`).
    public let residency: FileResidency
    /// The region to unmap: the file's mapping, or the anonymous region `base` lies in.
    private let region: (start: UnsafeMutableRawPointer, length: Int)

    /// `progress(bytes read, size)` after each 64 MB read into huge pages (not called when mapped).
    public init(path: String, residency: FileResidency = .mapped, progress: ((Int, Int) -> Void)? = nil) throws {
        let fd = Glibc.open(path, O_RDONLY)
        guard fd >= 0 else { throw MappedFileError(path: path, message: "cannot open: \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw MappedFileError(path: path, message: "cannot stat: \(errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw MappedFileError(path: path, message: "not a regular file") }
        let size = Int(info.st_size)
        guard size > 0 else { throw MappedFileError(path: path, message: "file is empty") }
        self.path = path
        self.size = size
        if residency == .hugePages, let region = try Self.readIntoHugePages(fd: fd, path: path, size: size, progress: progress) {
            self.region = region.region
            self.base = UnsafeRawPointer(region.base)
            self.residency = .hugePages
            return
        }
        guard let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), pointer != MAP_FAILED else {
            throw MappedFileError(path: path, message: "cannot mmap \(size) bytes: \(errnoText())")
        }
        self.region = (pointer, size)
        self.base = UnsafeRawPointer(pointer)
        self.residency = .mapped
    }

    deinit { munmap(region.start, region.length) }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    private static let hugePage = 2 << 20

    /// The file read into a fresh anonymous region whose start is 2 MB aligned, advised for huge
    /// pages and then made read-only; nil when the region cannot be mapped (the caller maps the
    /// file instead). A failed read is an error.
    private static func readIntoHugePages(fd: Int32, path: String, size: Int, progress: ((Int, Int) -> Void)?) throws -> (
        region: (UnsafeMutableRawPointer, Int), base: UnsafeMutableRawPointer
    )? {
        let length = (size + hugePage - 1) / hugePage * hugePage + hugePage
        guard let start = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), start != MAP_FAILED else {
            return nil
        }
        let base = start + ((hugePage - Int(bitPattern: start) % hugePage) % hugePage)
        _ = madvise(base, length - (base - start), MADV_HUGEPAGE)  // EINVAL without THP: 4 KB pages then
        var done = 0
        while done < size {
            let n = pread(fd, base + done, min(size - done, 64 << 20), off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = n == 0 ? "the file ended at byte \(done) of \(size) (changed while reading?)" : errnoText()
                munmap(start, length)
                throw MappedFileError(path: path, message: "cannot read: \(reason)")
            }
            done += n
            progress?(done, size)
        }
        mprotect(base, size, PROT_READ)
        return ((start, length), base)
    }
}

extension MappedFile {
    /// Files read into huge pages in this process, by path: a second opening of the same unchanged
    /// file (the light tier and the heavy tier's draft are one file) shares the first's memory.
    private static let resident = Mutex<[String: WeakFile]>([:])

    private struct WeakFile {
        weak var file: MappedFile?
        let identity: FileIdentity
    }

    private struct FileIdentity: Equatable {
        let device: UInt64, inode: UInt64, size: Int, modified: Int
    }

    private static func identity(_ path: String) -> FileIdentity? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileIdentity(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int(info.st_size),
            modified: Int(info.st_mtim.tv_sec) &* 1_000_000_000 &+ Int(info.st_mtim.tv_nsec))
    }

    /// `MappedFile(path:residency:progress:)`, except that with `.hugePages` a file this process
    /// already holds in huge pages, unchanged since, is shared rather than read again.
    public static func open(path: String, residency: FileResidency, progress: ((Int, Int) -> Void)? = nil) throws -> MappedFile {
        guard residency == .hugePages, let id = identity(path) else {
            return try MappedFile(path: path, residency: residency, progress: progress)
        }
        if let held = resident.withLock({ $0[path] }), held.identity == id, let file = held.file { return file }
        let file = try MappedFile(path: path, residency: residency, progress: progress)
        if file.residency == .hugePages { resident.withLock { $0[path] = WeakFile(file: file, identity: id) } }
        return file
    }
}

public struct MappedFileError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
