// The weights of a Llama-family decoder, by role, borrowed from a weight file (or built in memory).
// Matrices stay in their stored format (int8/int5/int4/f16/f32) and go through Tensor's quantized matmul;
// norm weights and biases (tiny) are copied out as Float32 vectors.
import Foundation
import Tensor

/// An owned Float32 vector (norm weights, biases): a stable pointer for the hot loop.
public final class FloatVector: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(_ values: [Float]) {
        count = values.count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(from: values, count: count)
    }

    /// Row 0 of a 1×count matrix in any format, dequantized.
    init(row matrix: QuantizedMatrix) {
        count = matrix.cols
        pointer = .allocate(capacity: max(count, 1))
        matrix.dequantizeRow(0, into: pointer)
    }

    deinit { pointer.deallocate() }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

public struct LayerWeights: @unchecked Sendable {
    public var attentionNorm: FloatVector  // [hidden]
    public var query: QuantizedMatrix  // [heads*headDim, hidden]
    public var key: QuantizedMatrix  // [kvHeads*headDim, hidden]
    public var value: QuantizedMatrix  // [kvHeads*headDim, hidden]
    public var queryBias, keyBias, valueBias: FloatVector?  // present when attentionBias
    public var attentionOutput: QuantizedMatrix  // [hidden, heads*headDim]
    public var feedForwardNorm: FloatVector  // [hidden]
    public var gate: QuantizedMatrix  // [ffn, hidden]
    public var up: QuantizedMatrix  // [ffn, hidden]
    public var down: QuantizedMatrix  // [hidden, ffn]
}

public struct ModelWeights: @unchecked Sendable {
    public var tokenEmbedding: QuantizedMatrix  // [vocab, hidden]
    public var outputNorm: FloatVector  // [hidden]
    public var output: QuantizedMatrix  // [vocab, hidden]; the embedding itself when tied
    public var layers: [LayerWeights]

    /// Tensor names (GGUF spelling) and their [rows, cols] for a configuration, in file order.
    public static func tensorShapes(_ c: ModelConfiguration) -> [(name: String, rows: Int, cols: Int)] {
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        var shapes: [(String, Int, Int)] = [("token_embd.weight", c.vocabSize, c.hiddenSize)]
        for i in 0..<c.numHiddenLayers {
            let p = "blk.\(i)."
            shapes.append((p + "attn_norm.weight", 1, c.hiddenSize))
            shapes.append((p + "attn_q.weight", q, c.hiddenSize))
            shapes.append((p + "attn_k.weight", kv, c.hiddenSize))
            shapes.append((p + "attn_v.weight", kv, c.hiddenSize))
            if c.attentionBias {
                shapes.append((p + "attn_q.bias", 1, q))
                shapes.append((p + "attn_k.bias", 1, kv))
                shapes.append((p + "attn_v.bias", 1, kv))
            }
            shapes.append((p + "attn_output.weight", c.hiddenSize, q))
            shapes.append((p + "ffn_norm.weight", 1, c.hiddenSize))
            shapes.append((p + "ffn_gate.weight", c.intermediateSize, c.hiddenSize))
            shapes.append((p + "ffn_up.weight", c.intermediateSize, c.hiddenSize))
            shapes.append((p + "ffn_down.weight", c.hiddenSize, c.intermediateSize))
        }
        shapes.append(("output_norm.weight", 1, c.hiddenSize))
        if !c.tieWordEmbeddings { shapes.append(("output.weight", c.vocabSize, c.hiddenSize)) }
        return shapes
    }

    /// Collects the weights through `tensor(name)` (a weight file's `tensor(named:)`, or a dictionary),
    /// checking every shape against the configuration.
    public init(configuration c: ModelConfiguration, tensor: (String) throws -> QuantizedMatrix) throws {
        var found: [String: QuantizedMatrix] = [:]
        for (name, rows, cols) in Self.tensorShapes(c) {
            let m = try tensor(name)
            // Vectors may be stored as 1×n or n×1.
            let ok = (m.rows == rows && m.cols == cols) || (rows == 1 && m.rows * m.cols == cols && m.format == .f32)
            guard ok else {
                throw InferenceError.invalidConfiguration(
                    "tensor \(name): expected [\(rows), \(cols)] for the model configuration, found [\(m.rows), \(m.cols)]")
            }
            found[name] = m
        }
        func matrix(_ name: String) -> QuantizedMatrix { found[name]! }
        func vector(_ name: String) -> FloatVector {
            let m = found[name]!
            if m.rows == 1 { return FloatVector(row: m) }
            // n×1 f32: contiguous n floats.
            return FloatVector(Array(UnsafeBufferPointer(start: m.data.assumingMemoryBound(to: Float.self), count: m.rows * m.cols)))
        }
        tokenEmbedding = matrix("token_embd.weight")
        outputNorm = vector("output_norm.weight")
        output = c.tieWordEmbeddings ? tokenEmbedding : matrix("output.weight")
        layers = (0..<c.numHiddenLayers).map { i in
            let p = "blk.\(i)."
            return LayerWeights(
                attentionNorm: vector(p + "attn_norm.weight"),
                query: matrix(p + "attn_q.weight"), key: matrix(p + "attn_k.weight"), value: matrix(p + "attn_v.weight"),
                queryBias: c.attentionBias ? vector(p + "attn_q.bias") : nil,
                keyBias: c.attentionBias ? vector(p + "attn_k.bias") : nil,
                valueBias: c.attentionBias ? vector(p + "attn_v.bias") : nil,
                attentionOutput: matrix(p + "attn_output.weight"),
                feedForwardNorm: vector(p + "ffn_norm.weight"),
                gate: matrix(p + "ffn_gate.weight"), up: matrix(p + "ffn_up.weight"), down: matrix(p + "ffn_down.weight"))
        }
    }

    /// Bytes of weights one decode step reads (every matrix once; the embedding only one row).
    public var bytesReadPerToken: Int {
        func size(_ m: QuantizedMatrix) -> Int { m.rows * QuantizedMatrix.bytesPerRow(format: m.format, cols: m.cols) }
        var total = size(output) + QuantizedMatrix.bytesPerRow(format: tokenEmbedding.format, cols: tokenEmbedding.cols)
        for l in layers {
            total += size(l.query) + size(l.key) + size(l.value) + size(l.attentionOutput)
            total += size(l.gate) + size(l.up) + size(l.down)
        }
        return total
    }
}

// MARK: - Synthetic models (tests, scheduler tests, benches without a file)

extension ModelWeights {
    /// Random Float32 tensors for `configuration`, by name (GGUF spelling), row-major [rows*cols],
    /// scaled so activations stay of order 1 through many layers: matrices U(-1,1)/sqrt(cols),
    /// norms 1 + U(-0.1, 0.1), biases U(-0.2, 0.2), embedding U(-1, 1).
    public static func syntheticTensors(_ c: ModelConfiguration, seed: UInt64) -> [String: [Float]] {
        var rng = SamplingRNG(seed: seed)
        var tensors: [String: [Float]] = [:]
        for (name, rows, cols) in tensorShapes(c) {
            let n = rows * cols
            let values: [Float]
            if name.hasSuffix("norm.weight") {
                values = (0..<n).map { _ in 1 + 0.1 * rng.nextSigned() }
            } else if name.hasSuffix(".bias") {
                values = (0..<n).map { _ in 0.2 * rng.nextSigned() }
            } else if name == "token_embd.weight" {
                values = (0..<n).map { _ in rng.nextSigned() }
            } else {
                let scale = 1 / Float(cols).squareRoot()
                values = (0..<n).map { _ in scale * rng.nextSigned() }
            }
            tensors[name] = values
        }
        return tensors
    }

    /// Weights from Float32 tensors by name: matrices quantized to `format`, vectors kept Float32.
    public init(configuration c: ModelConfiguration, floatTensors: [String: [Float]], format: WeightFormat = .f32) throws {
        var matrices: [String: QuantizedMatrix] = [:]
        for (name, rows, cols) in Self.tensorShapes(c) {
            guard let values = floatTensors[name], values.count == rows * cols else {
                throw InferenceError.invalidConfiguration(
                    "tensor \(name): expected \(rows * cols) values, found \(floatTensors[name]?.count ?? 0)")
            }
            let f: WeightFormat = rows == 1 ? .f32 : format
            matrices[name] = values.withUnsafeBufferPointer {
                QuantizedMatrix.quantize($0.baseAddress!, rows: rows, cols: cols, format: f)
            }
        }
        try self.init(configuration: c) { name in
            guard let m = matrices[name] else { throw InferenceError.invalidConfiguration("missing tensor \(name)") }
            return m
        }
    }
}
