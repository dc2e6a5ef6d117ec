import Foundation
import Transformer

// GGUF, versions 2 and 3 (llama.cpp's model file; spec: ggml/docs/gguf.md). All little-endian:
//
//   "GGUF" magic | version u32 | tensor_count u64 | metadata_kv_count u64
//   metadata: key (string) | value_type u32 | value           string = length u64 + UTF-8 bytes
//   tensor infos: name (string) | n_dims u32 | ne[n_dims] u64 | ggml_type u32 | offset u64 (from data start)
//   padding to `general.alignment` (default 32) | tensor data
//
// ne[0] is the contiguous dimension: a 2-D tensor with ne = [cols, rows] is `rows` rows of `cols` values.
// Everything read from the file is bounds-checked: a bad file gives a GGUFError naming what was wrong.

public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Bytes of one value, nil for variable-size types (string, array).
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }
}

/// A metadata value. Arrays keep their element type and are stored typed (a vocabulary is 150k strings).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFArray)

    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .float32: .float32
        case .bool: .bool
        case .string: .string
        case .uint64: .uint64
        case .int64: .int64
        case .float64: .float64
        case .array: .array
        }
    }

    /// Any integer type as Int (nil if it does not fit or is not an integer).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    public var floatValue: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: intValue.map(Double.init)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: GGUFArray? { if case .array(let a) = self { a } else { nil } }
}

public enum GGUFArray: Sendable, Equatable {
    case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16]), uint32([UInt32]), int32([Int32])
    case float32([Float]), bool([Bool]), string([String]), uint64([UInt64]), int64([Int64]), float64([Double])
    /// Nested arrays: each element is itself a typed array.
    case array([GGUFArray])

    public var count: Int {
        switch self {
        case .uint8(let a): a.count
        case .int8(let a): a.count
        case .uint16(let a): a.count
        case .int16(let a): a.count
        case .uint32(let a): a.count
        case .int32(let a): a.count
        case .float32(let a): a.count
        case .bool(let a): a.count
        case .string(let a): a.count
        case .uint64(let a): a.count
        case .int64(let a): a.count
        case .float64(let a): a.count
        case .array(let a): a.count
        }
    }

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .float32: .float32
        case .bool: .bool
        case .string: .string
        case .uint64: .uint64
        case .int64: .int64
        case .float64: .float64
        case .array: .array
        }
    }

    /// Integer arrays as [Int] (nil for other element types or values that do not fit).
    public var intValues: [Int]? {
        switch self {
        case .uint8(let a): a.map(Int.init)
        case .int8(let a): a.map(Int.init)
        case .uint16(let a): a.map(Int.init)
        case .int16(let a): a.map(Int.init)
        case .uint32(let a): a.map(Int.init)
        case .int32(let a): a.map(Int.init)
        case .int64(let a): a.map(Int.init)
        case .uint64(let a): a.allSatisfy({ $0 <= UInt64(Int.max) }) ? a.map { Int($0) } : nil
        default: nil
        }
    }

    public var floatValues: [Float]? {
        switch self {
        case .float32(let a): a
        case .float64(let a): a.map(Float.init)
        default: nil
        }
    }

    public var stringValues: [String]? { if case .string(let a) = self { a } else { nil } }
}

public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    /// ne: dimensions, ne[0] contiguous.
    public var dimensions: [Int]
    public var type: GGMLType
    /// Offset from the start of the data section.
    public var offset: Int
    public var byteLength: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
    /// Contiguous length (ne[0]).
    public var cols: Int { dimensions[0] }
    /// Product of the other dimensions.
    public var rows: Int { dimensions.dropFirst().reduce(1, *) }
}

public struct GGUFError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
}

public final class GGUFFile: @unchecked Sendable {
    public static let supportedVersions: ClosedRange<UInt32> = 2...3
    /// Nested arrays deeper than this are refused (a crafted file could otherwise recurse without end).
    static let maximumNesting = 8

    public let path: String
    public let version: UInt32
    /// Metadata in file order, and by key.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    public let mapping: MappedFile
    private let tensorIndex: [String: Int]

    public convenience init(path: String) throws {
        let mapping: MappedFile
        do { mapping = try MappedFile(path: path) } catch let error as MappedFileError {
            throw GGUFError(path: path, message: error.message)
        }
        try self.init(mapping: mapping)
    }

    public init(mapping: MappedFile) throws {
        let path = mapping.path
        func fail(_ message: String) -> GGUFError { GGUFError(path: path, message: message) }
        var r = GGUFCursor(bytes: mapping.bytes, path: path)
        let magic = try r.bytes(4, "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            let shown = magic.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            throw fail("not a GGUF file: magic is \"\(shown)\", expected \"GGUF\"")
        }
        let version = try r.u32("version")
        guard Self.supportedVersions.contains(version) else {
            throw fail("GGUF version \(version) is not supported (expected 2 or 3)")
        }
        let tensorCount = try r.u64("tensor count")
        let kvCount = try r.u64("metadata count")
        // Each tensor info takes at least 8+4+8+4+8 bytes, each key/value at least 8+4+1: a count that
        // could not fit in the file is corruption, caught before allocating anything for it.
        guard tensorCount <= UInt64(mapping.size / 32) else {
            throw fail("tensor count \(tensorCount) is impossible for a \(mapping.size)-byte file (corrupted header)")
        }
        guard kvCount <= UInt64(mapping.size / 13) else {
            throw fail("metadata count \(kvCount) is impossible for a \(mapping.size)-byte file (corrupted header)")
        }
        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for i in 0..<Int(kvCount) {
            let key = try r.string("key of metadata entry \(i)")
            let rawType = try r.u32("type of '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw fail("metadata '\(key)' has unknown value type \(rawType) (expected 0...12)")
            }
            let value = try r.value(type, key: key, depth: 0)
            if metadata.updateValue(value, forKey: key) == nil {
                keys.append(key)
            } else {
                throw fail("metadata key '\(key)' appears twice")
            }
        }
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.intValue, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw fail("general.alignment is \(a), expected a power of two")
            }
            alignment = v
        }
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(Int(tensorCount))
        var index: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let name = try r.string("name of tensor \(i)")
            let nDims = try r.u32("dimension count of '\(name)'")
            guard (1...4).contains(nDims) else {
                throw fail("tensor '\(name)' has \(nDims) dimensions, expected 1 to 4")
            }
            var dims: [Int] = []
            var elements = 1
            for d in 0..<Int(nDims) {
                let ne = try r.u64("dimension \(d) of '\(name)'")
                guard ne > 0, ne <= 1 << 40 else { throw fail("tensor '\(name)' has dimension \(d) = \(ne), expected 1...2^40") }
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(ne))
                guard !overflow, product <= 1 << 42 else {
                    throw fail("tensor '\(name)' has an absurd element count (dimensions \(dims + [Int(ne)]))")
                }
                elements = product
                dims.append(Int(ne))
            }
            let rawType = try r.u32("type of '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw fail("tensor '\(name)' has unknown ggml type \(rawType)")
            }
            let offset = try r.u64("offset of '\(name)'")
            guard offset <= UInt64(mapping.size) else {
                throw fail("tensor '\(name)' data offset \(offset) is past the end of the \(mapping.size)-byte file")
            }
            var byteLength = 0
            if let traits = type.traits {
                guard dims[0] % traits.blockSize == 0 else {
                    throw fail(
                        "tensor '\(name)' (\(type)) has \(dims[0]) columns, expected a multiple of its block size \(traits.blockSize)")
                }
                byteLength = elements / traits.blockSize * traits.bytesPerBlock
            }
            guard index.updateValue(infos.count, forKey: name) == nil else { throw fail("tensor '\(name)' appears twice") }
            infos.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: Int(offset), byteLength: byteLength))
        }
        let dataOffset = (r.offset + alignment - 1) / alignment * alignment
        for t in infos where t.type.traits != nil {
            guard t.offset % alignment == 0 else {
                throw fail("tensor '\(t.name)' data offset \(t.offset) is not a multiple of the alignment \(alignment)")
            }
            let start = dataOffset + t.offset
            let (end, overflow) = start.addingReportingOverflow(t.byteLength)
            guard !overflow, end <= mapping.size else {
                throw fail(
                    "tensor '\(t.name)' data (\(t.byteLength) bytes at file offset \(start)) runs past the end of the \(mapping.size)-byte file (truncated?)"
                )
            }
        }
        self.path = path
        self.version = version
        self.metadataKeys = keys
        self.metadata = metadata
        self.tensors = infos
        self.alignment = alignment
        self.dataOffset = dataOffset
        self.mapping = mapping
        self.tensorIndex = index
    }

    public func tensorInfo(named name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// Start of a tensor's bytes in the mapping. The type must be one this reader understands (else throws).
    public func data(of tensor: GGUFTensorInfo) throws -> UnsafeRawPointer {
        guard tensor.type.traits != nil else {
            throw GGUFError(
                path: path,
                message: "tensor '\(tensor.name)' has type \(tensor.type), which is not supported (supported: \(GGMLType.supportedNames))")
        }
        return mapping.base + dataOffset + tensor.offset
    }

    /// Dequantizes a whole tensor to Float32, rows × cols (tests and small tensors).
    public func dequantize(_ tensor: GGUFTensorInfo) throws -> [Float] {
        let src = try data(of: tensor)
        var out = [Float](repeating: 0, count: tensor.elementCount)
        let rowBytes = tensor.type.rowBytes(cols: tensor.cols)
        out.withUnsafeMutableBufferPointer { dst in
            for row in 0..<tensor.rows {
                tensor.type.dequantizeRow(src + row * rowBytes, dst.baseAddress! + row * tensor.cols, cols: tensor.cols)
            }
        }
        return out
    }
}

/// Bounds-checked little-endian reader over the mapped bytes.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    private func need(_ count: Int, _ what: String) throws {
        guard count >= 0, count <= bytes.count - offset else {
            throw GGUFError(
                path: path,
                message:
                    "file ends at byte \(bytes.count) while reading \(what) (\(count) bytes at offset \(offset)): truncated or corrupted")
        }
    }

    mutating func bytes(_ count: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        try need(count, what)
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        try need(MemoryLayout<T>.size, what)
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    mutating func u32(_ what: String) throws -> UInt32 { try load(UInt32.self, what) }
    mutating func u64(_ what: String) throws -> UInt64 { try load(UInt64.self, what) }

    mutating func string(_ what: String) throws -> String {
        let length = try u64("length of \(what)")
        guard length <= UInt64(bytes.count - offset) else {
            throw GGUFError(
                path: path,
                message:
                    "\(what) claims \(length) bytes at offset \(offset - 8), past the end of the \(bytes.count)-byte file (truncated or corrupted)"
            )
        }
        return String(decoding: try self.bytes(Int(length), what), as: UTF8.self)
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .bool: return .bool(try load(UInt8.self, what) != 0)
        case .string: return .string(try string(what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .array: return .array(try array(key: key, depth: depth))
        }
    }

    mutating func array(key: String, depth: Int) throws -> GGUFArray {
        guard depth < GGUFFile.maximumNesting else {
            throw GGUFError(path: path, message: "metadata '\(key)' nests arrays deeper than \(GGUFFile.maximumNesting) levels")
        }
        let rawType = try u32("element type of '\(key)'")
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw GGUFError(path: path, message: "metadata '\(key)' is an array of unknown type \(rawType) (expected 0...12)")
        }
        let count64 = try u64("element count of '\(key)'")
        // Every element takes at least one byte (strings and arrays at least 8, 12): refuse counts the
        // rest of the file cannot hold before reserving memory for them.
        let minimum = UInt64(type.fixedSize ?? (type == .string ? 8 : 12))
        guard count64 <= UInt64(bytes.count - offset) / minimum else {
            throw GGUFError(
                path: path,
                message:
                    "metadata '\(key)' claims \(count64) elements of type \(type), more than the rest of the file can hold (truncated or corrupted)"
            )
        }
        let count = Int(count64)
        func fixed<T: FixedWidthInteger>(_ t: T.Type) throws -> [T] {
            let raw = try bytes(count * MemoryLayout<T>.size, "elements of '\(key)'")
            return (0..<count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
        }
        switch type {
        case .uint8: return .uint8(try fixed(UInt8.self))
        case .int8: return .int8(try fixed(Int8.self))
        case .uint16: return .uint16(try fixed(UInt16.self))
        case .int16: return .int16(try fixed(Int16.self))
        case .uint32: return .uint32(try fixed(UInt32.self))
        case .int32: return .int32(try fixed(Int32.self))
        case .float32: return .float32(try fixed(UInt32.self).map { Float(bitPattern: $0) })
        case .bool: return .bool(try fixed(UInt8.self).map { $0 != 0 })
        case .uint64: return .uint64(try fixed(UInt64.self))
        case .int64: return .int64(try fixed(Int64.self))
        case .float64: return .float64(try fixed(UInt64.self).map { Double(bitPattern: $0) })
        case .string:
            var out: [String] = []
            out.reserveCapacity(count)
            for i in 0..<count { out.append(try string("element \(i) of '\(key)'")) }
            return .string(out)
        case .array:
            var out: [GGUFArray] = []
            for _ in 0..<count { out.append(try array(key: key, depth: depth + 1)) }
            return .array(out)
        }
    }
}
