#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory (mmap PROT_READ, MAP_PRIVATE). Weights and GGUF tensors
/// borrow straight from `base`; whoever borrows keeps this object alive as `owner`.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws {
        let fd = Glibc.open(path, O_RDONLY)
        guard fd >= 0 else { throw MappedFileError(path: path, message: "cannot open: \(errnoText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw MappedFileError(path: path, message: "cannot stat: \(errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw MappedFileError(path: path, message: "not a regular file") }
        let size = Int(info.st_size)
        guard size > 0 else { throw MappedFileError(path: path, message: "file is empty") }
        guard let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), pointer != MAP_FAILED else {
            throw MappedFileError(path: path, message: "cannot mmap \(size) bytes: \(errnoText())")
        }
        self.path = path
        self.base = UnsafeRawPointer(pointer)
        self.size = size
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}

public struct MappedFileError: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
