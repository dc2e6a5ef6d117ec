import Foundation
import Tensor
import Tokenizer
import Transformer

public struct ConversionProgress: Sendable {
    public var tensorNumber: Int
    public var tensorCount: Int
    public var tensorName: String
    public var bytesWritten: Int
    public var totalBytes: Int
}

public struct ConversionSummary: Sendable {
    /// Weights in matrices and vectors.
    public var parameters: Int
    public var fileBytes: Int
    /// Tensor bytes × 8 / parameters.
    public var bitsPerWeight: Double
    public var seconds: Double
    /// Tensors per stored format.
    public var formats: [WeightFormat: Int]
    /// Q6_K/other groups that could not be repacked exactly and were requantized.
    public var requantizedGroups: Int
}

public enum Converter {
    /// Opens INPUT: a `.gguf` file, or a Hugging Face folder (config.json + safetensors + tokenizer.json).
    public static func load(_ input: String) throws -> ImportedModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory) else {
            throw ImportError("\(input): no such file or folder (expected a .gguf file or a Hugging Face model folder)")
        }
        if isDirectory.boolValue { return try HuggingFaceFolder(path: input).importModel() }
        return try GGUFFile(path: input).importModel()
    }

    /// Converts `model` into a Sarvam weight file at `output` (written to a temporary name, then renamed).
    public static func convert(
        _ model: ImportedModel, to output: String, policy: QuantizationPolicy = .auto,
        progress: ((ConversionProgress) -> Void)? = nil
    ) throws -> ConversionSummary {
        let start = Date()
        // The Codable shape, which the Tokenizer module's `TokenizerDescription.decodeJSON` reads.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let tokenizerJSON = try encoder.encode(model.tokenizer)
        let description = WeightFileDescription(
            model: model.configuration, tokenizer: tokenizerJSON,
            chatTemplate: model.chatTemplate, source: model.source,
            quantization: policy.summary)
        var formats: [WeightFormat: Int] = [:]
        var parameters = 0
        var tensorBytes = 0
        let requantized = Counter()
        var sources: [WeightFileTensorSource] = []
        for t in model.tensors {
            let format = policy.format(for: t, layers: model.configuration.numHiddenLayers) { fitsFloat16(t) }
            formats[format, default: 0] += 1
            parameters += t.rows * t.cols
            tensorBytes += QuantizedMatrix.bytesPerRow(format: format, cols: t.cols) * t.rows
            sources.append(tensorSource(t, format: format, requantized: requantized))
        }
        try WeightFile.write(to: output, description: description, tensors: sources) { p in
            progress?(
                ConversionProgress(
                    tensorNumber: p.tensorNumber, tensorCount: p.tensorCount, tensorName: p.tensorName,
                    bytesWritten: p.bytesWritten, totalBytes: p.totalBytes))
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        return ConversionSummary(
            parameters: parameters, fileBytes: size,
            bitsPerWeight: parameters > 0 ? Double(tensorBytes * 8) / Double(parameters) : 0,
            seconds: Date().timeIntervalSince(start), formats: formats, requantizedGroups: requantized.value)
    }

    /// Counts requantized groups across a conversion.
    public final class Counter: @unchecked Sendable {
        public var value = 0
        public init() {}
    }

    static func fitsFloat16(_ t: SourceTensor) -> Bool {
        var row = [Float](repeating: 0, count: t.cols)
        return row.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<t.rows {
                t.dequantizeRow(r, into: buffer.baseAddress!)
                for v in buffer where !(abs(v) <= 65504) { return false }
            }
            return true
        }
    }

    /// Rows per chunk so that a chunk's floats stay near 4 MB.
    static func chunkRows(_ cols: Int) -> Int { max(1, (1 << 20) / max(cols, 1)) }

    /// The producer for one tensor: an exact repack when the (source type, format) pair has one,
    /// else dequantize a chunk of rows to Float32 and encode it in `format`.
    public static func tensorSource(_ t: SourceTensor, format: WeightFormat, requantized: Counter) -> WeightFileTensorSource {
        let outRow = QuantizedMatrix.bytesPerRow(format: format, cols: t.cols)
        func rowwise(
            _ body: @escaping (_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ rows: Int) -> Void
        ) -> WeightFileTensorSource {
            WeightFileTensorSource(name: t.name, format: format, rows: t.rows, cols: t.cols) { emit in
                let step = chunkRows(t.cols)
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: outRow * step, alignment: 64)
                defer { buffer.deallocate() }
                var r = 0
                while r < t.rows {
                    let n = min(step, t.rows - r)
                    try withExtendedLifetime(t.owner) {
                        body(t.row(r), buffer, n)
                        try emit(UnsafeRawBufferPointer(start: buffer, count: outRow * n))
                    }
                    r += n
                }
            }
        }
        switch (t.type, format) {
        case (.F32, .f32), (.F16, .f16), (.Q8_0, .int8):
            // Same bytes: int8 is Q8_0's block, f32/f16 are plain arrays.
            return WeightFileTensorSource(name: t.name, format: format, rows: t.rows, cols: t.cols) { emit in
                try withExtendedLifetime(t.owner) { try emit(UnsafeRawBufferPointer(start: t.data, count: t.byteLength)) }
            }
        case (.Q4_0, .int8):
            return rowwise { src, dst, rows in Repack.q4_0ToInt8(src, dst, blocks: rows * t.cols / 32) }
        case (.Q5_0, .int8):
            return rowwise { src, dst, rows in Repack.q5_0ToInt8(src, dst, blocks: rows * t.cols / 32) }
        case (.Q5_0, .int5):
            return rowwise { src, dst, rows in Repack.q5_0ToInt5(src, dst, rows: rows, cols: t.cols) }
        case (.Q4_K, .int4):
            return rowwise { src, dst, rows in Repack.q4_KToInt4(src, dst, superblocks: rows * t.cols / 256) }
        case (.Q6_K, .int6):
            return rowwise { src, dst, rows in Repack.q6_KToInt6(src, dst, superblocks: rows * t.cols / 256) }
        case (.Q6_K, .int8):
            return rowwise { src, dst, rows in
                requantized.value += Repack.q6_KToInt8(src, dst, superblocks: rows * t.cols / 256)
            }
        default:
            break
        }
        // Generic path through Float32.
        return WeightFileTensorSource(name: t.name, format: format, rows: t.rows, cols: t.cols) { emit in
            let step = chunkRows(t.cols)
            let floats = UnsafeMutablePointer<Float>.allocate(capacity: step * t.cols)
            defer { floats.deallocate() }
            let halves = UnsafeMutablePointer<UInt16>.allocate(capacity: format == .f16 ? step * t.cols : 1)
            defer { halves.deallocate() }
            var r = 0
            while r < t.rows {
                let n = min(step, t.rows - r)
                withExtendedLifetime(t.owner) {
                    for i in 0..<n { t.dequantizeRow(r + i, into: floats + i * t.cols) }
                }
                switch format {
                case .f32:
                    try emit(UnsafeRawBufferPointer(start: floats, count: 4 * n * t.cols))
                case .f16:
                    for i in 0..<n * t.cols { halves[i] = Float16(floats[i]).bitPattern.littleEndian }
                    try emit(UnsafeRawBufferPointer(start: halves, count: 2 * n * t.cols))
                case .int8, .int5, .int4, .int6:
                    let q = QuantizedMatrix.quantize(floats, rows: n, cols: t.cols, format: format)
                    try withExtendedLifetime(q.owner) {
                        try emit(UnsafeRawBufferPointer(start: q.data, count: outRow * n))
                    }
                }
                r += n
            }
        }
    }
}
