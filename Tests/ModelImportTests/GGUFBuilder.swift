import Foundation
import ModelImport

/// Writes GGUF files for tests, independently of the reader: metadata of every type (nested arrays
/// included), tensors with raw bytes laid out at `alignment`. `bytes()` gives the file image so that
/// tests can also cut or corrupt it.
struct GGUFBuilder {
    struct TensorSpec {
        var name: String
        /// ne, ne[0] contiguous.
        var dimensions: [Int]
        var type: UInt32
        var data: [UInt8]
    }

    var version: UInt32 = 3
    var metadata: [(key: String, value: GGUFValue)] = []
    var tensors: [TensorSpec] = []
    var alignment = 32

    mutating func set(_ key: String, _ value: GGUFValue) {
        metadata.removeAll { $0.key == key }
        metadata.append((key, value))
    }

    mutating func add(_ name: String, dimensions: [Int], type: GGMLType, data: [UInt8]) {
        tensors.append(TensorSpec(name: name, dimensions: dimensions, type: type.rawValue, data: data))
    }

    /// Adds a float tensor stored as F32, F16 or BF16 (rows × cols, given as ne = [cols, rows] or [n]).
    mutating func add(_ name: String, dimensions: [Int], floats: [Float], as type: GGMLType = .F32) {
        var bytes: [UInt8] = []
        for v in floats {
            switch type {
            case .F32: bytes.append(contentsOf: le(v.bitPattern))
            case .F16: bytes.append(contentsOf: le(Float16(v).bitPattern))
            case .BF16: bytes.append(contentsOf: le(UInt16(v.bitPattern >> 16)))
            default: preconditionFailure("float tensors only")
            }
        }
        add(name, dimensions: dimensions, type: type, data: bytes)
    }

    func bytes() -> [UInt8] {
        var out: [UInt8] = Array("GGUF".utf8)
        out += le(version)
        out += le(UInt64(tensors.count))
        out += le(UInt64(metadata.count))
        for (key, value) in metadata {
            out += Self.string(key)
            out += le(value.type.rawValue)
            out += Self.payload(value)
        }
        var offsets: [Int] = []
        var offset = 0
        for t in tensors {
            offsets.append(offset)
            offset = (offset + t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            out += Self.string(t.name)
            out += le(UInt32(t.dimensions.count))
            for d in t.dimensions { out += le(UInt64(d)) }
            out += le(t.type)
            out += le(UInt64(o))
        }
        while out.count % alignment != 0 { out.append(0) }
        let start = out.count
        for (t, o) in zip(tensors, offsets) {
            while out.count < start + o { out.append(0) }
            out += t.data
        }
        return out
    }

    func write(to path: String) throws {
        try Data(bytes()).write(to: URL(fileURLWithPath: path))
    }

    static func string(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }

    static func payload(_ v: GGUFValue) -> [UInt8] {
        switch v {
        case .uint8(let x): return [x]
        case .int8(let x): return [UInt8(bitPattern: x)]
        case .uint16(let x): return le(x)
        case .int16(let x): return le(x)
        case .uint32(let x): return le(x)
        case .int32(let x): return le(x)
        case .float32(let x): return le(x.bitPattern)
        case .bool(let x): return [x ? 1 : 0]
        case .string(let x): return string(x)
        case .uint64(let x): return le(x)
        case .int64(let x): return le(x)
        case .float64(let x): return le(x.bitPattern)
        case .array(let a): return array(a)
        }
    }

    static func array(_ a: GGUFArray) -> [UInt8] {
        var out = le(a.elementType.rawValue) + le(UInt64(a.count))
        switch a {
        case .uint8(let x): out += x
        case .int8(let x): out += x.map { UInt8(bitPattern: $0) }
        case .uint16(let x): x.forEach { out += le($0) }
        case .int16(let x): x.forEach { out += le($0) }
        case .uint32(let x): x.forEach { out += le($0) }
        case .int32(let x): x.forEach { out += le($0) }
        case .float32(let x): x.forEach { out += le($0.bitPattern) }
        case .bool(let x): out += x.map { $0 ? 1 : 0 }
        case .string(let x): x.forEach { out += string($0) }
        case .uint64(let x): x.forEach { out += le($0) }
        case .int64(let x): x.forEach { out += le($0) }
        case .float64(let x): x.forEach { out += le($0.bitPattern) }
        case .array(let x): x.forEach { out += array($0) }
        }
        return out
    }
}

func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

func halfBits(_ f: Float) -> [UInt8] { le(Float16(f).bitPattern) }

/// A fresh temporary path (removed by the caller's tearDown or left in /tmp).
func temporaryPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-import-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

/// Builds and writes a GGUF, then opens it with the reader.
func openGGUF(_ builder: GGUFBuilder, name: String = "t.gguf") throws -> GGUFFile {
    let path = temporaryPath(UUID().uuidString + "-" + name)
    try builder.write(to: path)
    return try GGUFFile(path: path)
}
