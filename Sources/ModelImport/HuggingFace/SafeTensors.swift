import Foundation
import Transformer

// safetensors: u64 little-endian header length N | N bytes of JSON
//   { "<name>": {"dtype": "F16", "shape": [rows, cols], "data_offsets": [begin, end]}, …, "__metadata__": {…} }
// | data, offsets relative to byte 8 + N. Tensors are row-major, last dimension contiguous.

public struct SafeTensorsEntry: Sendable, Equatable {
    public var name: String
    public var dtype: String
    public var shape: [Int]
    /// Absolute file offset and length.
    public var offset: Int
    public var byteLength: Int
}

public final class SafeTensorsFile: @unchecked Sendable {
    /// dtypes this importer reads, as ggml types with the same element encoding.
    static let types: [String: GGMLType] = ["F32": .F32, "F16": .F16, "BF16": .BF16]

    public let path: String
    public let mapping: MappedFile
    public let entries: [String: SafeTensorsEntry]

    public init(path: String) throws {
        func fail(_ message: String) -> ImportError { ImportError("\(path): \(message)") }
        do { mapping = try MappedFile(path: path) } catch let error as MappedFileError { throw ImportError("\(error)") }
        self.path = path
        guard mapping.size >= 8 else { throw fail("file is \(mapping.size) bytes, too short for a safetensors header") }
        let headerLength = UInt64(littleEndian: mapping.base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(mapping.size - 8), headerLength <= 100 << 20 else {
            throw fail(
                "safetensors header length \(headerLength) does not fit in the \(mapping.size)-byte file (truncated or not safetensors)")
        }
        let dataStart = 8 + Int(headerLength)
        let json = Data(bytes: mapping.base + 8, count: Int(headerLength))
        guard let header = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw fail("safetensors header is not a JSON object")
        }
        var entries: [String: SafeTensorsEntry] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else {
                throw fail("tensor '\(name)' has a malformed entry (expected dtype, shape, data_offsets)")
            }
            guard let type = Self.types[dtype] else {
                throw fail("tensor '\(name)' has dtype \(dtype), which is not supported (supported: F32, F16, BF16)")
            }
            guard shape.allSatisfy({ $0 > 0 && $0 <= 1 << 40 }), (1...2).contains(shape.count) else {
                throw fail("tensor '\(name)' has shape \(shape), expected 1 or 2 positive dimensions")
            }
            let elements = shape.reduce(1, *)
            let length = elements * type.rowBytes(cols: 1)
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end - begin == length else {
                throw fail("tensor '\(name)' spans \(end - begin) bytes, expected \(length) for \(dtype) \(shape)")
            }
            guard dataStart + end <= mapping.size else {
                throw fail("tensor '\(name)' ends at byte \(dataStart + end), past the end of the \(mapping.size)-byte file (truncated?)")
            }
            entries[name] = SafeTensorsEntry(name: name, dtype: dtype, shape: shape, offset: dataStart + begin, byteLength: length)
        }
        self.entries = entries
    }

    /// A tensor as a SourceTensor under `sarvamName`, borrowed from the mapping.
    func sourceTensor(_ entry: SafeTensorsEntry, sarvamName: String) -> SourceTensor {
        let isVector = entry.shape.count == 1
        return SourceTensor(
            name: sarvamName, type: Self.types[entry.dtype]!, rows: isVector ? 1 : entry.shape[0],
            cols: isVector ? entry.shape[0] : entry.shape[1], isVector: isVector,
            data: mapping.base + entry.offset, owner: mapping)
    }
}
