// A Llama-family decoder (Llama, Qwen2) run over batches of sequences with a paged KV cache.
//
// Shape letters: M token rows in the step (all entries together), H hidden size, Q = heads × D,
// KV = kvHeads × D, D head dim, F feed-forward size, V vocabulary, R rows that need logits.
//
//   x = embed(tokens)                                   [M, H]
//   per layer:  h = rmsNorm(x)                          [M, H]
//               q, k, v = h·Wq^T (+bq), h·Wk^T, h·Wv^T  [M, Q], [M, KV], [M, KV]
//               rope(q, k) at each row's position; k, v -> cache
//               a = attention(q, cache)                 [M, Q]  (causal, GQA, per sequence)
//               x += a·Wo^T
//               h = rmsNorm(x); x += (silu(h·Wg^T) * h·Wu^T)·Wd^T
//   logits = rmsNorm(x[rows wanted])·Wout^T             [R, V]
//
// Every weight matrix is applied once per step to all M rows (quantizedMatmul with m = M), so a
// batch of decoding sequences and a prefill chunk share one read of the weights.
import Foundation
import Tensor

/// Which logits an entry of a batch wants back.
public enum LogitsRequest: Sendable {
    case none   // prefill chunk that is not the end of the prompt
    case last   // the next-token distribution (decode, last chunk of a prompt)
    case all    // every position (perplexity, tests)
}

/// One entry of a forward step: the tokens to append to a sequence (1 for decoding, many for a
/// prefill chunk), processed at positions sequence.length ..< sequence.length + tokens.count.
public struct SequenceInput: @unchecked Sendable {
    public var sequence: KVSequence
    public var tokens: [Int]
    public var logits: LogitsRequest

    public init(sequence: KVSequence, tokens: [Int], logits: LogitsRequest = .last) {
        self.sequence = sequence
        self.tokens = tokens
        self.logits = logits
    }
}

/// Logits of a step, R×V row-major, borrowed from the model's workspace: valid until the next
/// `forward` call (copy what must outlive it).
public struct BatchLogits {
    public let vocabularySize: Int
    public let pointer: UnsafePointer<Float>
    /// For each batch entry, its rows in this buffer (empty for `.none`; one row for `.last`).
    public let entryRows: [Range<Int>]

    public var rowCount: Int { entryRows.last?.upperBound ?? 0 }

    public func row(_ r: Int) -> UnsafeBufferPointer<Float> {
        precondition(r >= 0 && r < rowCount, "logit row \(r) outside 0..<\(rowCount)")
        return UnsafeBufferPointer(start: pointer + r * vocabularySize, count: vocabularySize)
    }

    /// The last logit row of entry `e`, nil when it asked for none.
    public func last(entry e: Int) -> UnsafeBufferPointer<Float>? {
        entryRows[e].isEmpty ? nil : row(entryRows[e].upperBound - 1)
    }

    public func array(row r: Int) -> [Float] { Array(row(r)) }
}

public final class Model: @unchecked Sendable {
    public let configuration: ModelConfiguration
    public let weights: ModelWeights
    public let pool: ThreadPool
    let ropeLayout: Ops.RopeLayout
    /// Keeps the weight file (its mapping) alive when the model was loaded from one.
    private let source: AnyObject?
    private let workspace: Workspace

    public init(configuration: ModelConfiguration, weights: ModelWeights, pool: ThreadPool, source: AnyObject? = nil) throws {
        let c = configuration
        switch c.ropeLayout {
        case "interleaved": ropeLayout = .interleaved
        case "halves": ropeLayout = .halves
        default:
            throw InferenceError.invalidConfiguration("ropeLayout: expected \"interleaved\" or \"halves\", found \"\(c.ropeLayout)\"")
        }
        guard c.numAttentionHeads > 0, c.numKeyValueHeads > 0, c.numAttentionHeads % c.numKeyValueHeads == 0 else {
            throw InferenceError.invalidConfiguration(
                "numAttentionHeads (\(c.numAttentionHeads)) must be a positive multiple of numKeyValueHeads (\(c.numKeyValueHeads))")
        }
        guard c.headDim > 0, c.headDim % 2 == 0 else {
            throw InferenceError.invalidConfiguration("headDim must be even and positive, found \(c.headDim)")
        }
        self.configuration = c
        self.weights = weights
        self.pool = pool
        self.source = source
        workspace = Workspace(configuration: c, threads: pool.threads)
    }

    /// Loads the model a weight file describes, borrowing its matrices (no copy).
    public convenience init(file: WeightFile, pool: ThreadPool) throws {
        let c = file.description.model
        try c.validate()
        let weights = try ModelWeights(configuration: c) { try file.tensor(named: $0) }
        try self.init(configuration: c, weights: weights, pool: pool, source: file)
    }

    /// A cache shaped for this model.
    public func makeCache(memoryBudget: Int, precision: KVCache.Precision = .float16, blockSize: Int = 16,
                          contextLength: Int? = nil) throws -> KVCache {
        try KVCache(configuration: configuration, memoryBudget: memoryBudget, precision: precision,
                    blockSize: blockSize, contextLength: contextLength)
    }

    // MARK: - Forward step

    /// Runs one step over `batch`: appends each entry's tokens to its sequence (keys and values
    /// into the cache) and returns the logits the entries asked for. All or nothing: a thrown
    /// error (cache full, context limit, bad token) leaves every sequence as it was.
    /// Not reentrant: one caller at a time (the engine loop owns the model).
    public func forward(_ batch: [SequenceInput]) throws -> BatchLogits {
        let c = configuration
        guard let cache = batch.first?.sequence.cache else { throw InferenceError.invalidBatch("empty batch") }
        guard cache.layers == c.numHiddenLayers, cache.kvHeads == c.numKeyValueHeads, cache.headDim == c.headDim else {
            throw InferenceError.invalidBatch("the KV cache is shaped for another model")
        }
        var seen = Set<ObjectIdentifier>()
        var rows = 0, logitRows = 0
        for entry in batch {
            let s = entry.sequence
            guard s.cache === cache else { throw InferenceError.invalidBatch("sequences of one step must share one cache") }
            guard seen.insert(ObjectIdentifier(s)).inserted else {
                throw InferenceError.invalidBatch("sequence \(s.id) appears twice in one step")
            }
            guard !entry.tokens.isEmpty else { throw InferenceError.invalidBatch("sequence \(s.id) has no tokens to process") }
            guard s.length + entry.tokens.count <= cache.contextLength else {
                throw InferenceError.contextLimitExceeded(sequenceLength: s.length, adding: entry.tokens.count, limit: cache.contextLength)
            }
            for t in entry.tokens where t < 0 || t >= c.vocabSize {
                throw InferenceError.tokenOutOfRange(token: t, vocabularySize: c.vocabSize)
            }
            rows += entry.tokens.count
            switch entry.logits {
            case .none: break
            case .last: logitRows += 1
            case .all: logitRows += entry.tokens.count
            }
        }
        try cache.reserve(batch.map(\.sequence), growth: batch.map(\.tokens.count))

        let w = workspace
        w.ensureCapacity(rows: rows, logitRows: logitRows)
        w.ensureBlockSize(cache.blockSize)
        // Row bookkeeping: row r belongs to entry rowEntry[r] at position rowPosition[r].
        w.rowEntry.removeAll(keepingCapacity: true)
        w.rowPosition.removeAll(keepingCapacity: true)
        w.entryStart.removeAll(keepingCapacity: true)
        for (e, entry) in batch.enumerated() {
            w.entryStart.append(w.rowPosition.count)
            let start = entry.sequence.length
            for t in 0..<entry.tokens.count {
                w.rowEntry.append(e)
                w.rowPosition.append(start + t)
            }
        }

        let H = c.hiddenSize, D = c.headDim, Q = c.numAttentionHeads * D, KV = c.numKeyValueHeads * D
        let F = c.intermediateSize

        // Embedding: one dequantized row per token.
        var r = 0
        for entry in batch {
            for t in entry.tokens {
                weights.tokenEmbedding.dequantizeRow(t, into: w.x + r * H)
                r += 1
            }
        }

        for (l, layer) in weights.layers.enumerated() {
            // Attention block.
            for r in 0..<rows {
                Ops.rmsNorm(w.x + r * H, weight: layer.attentionNorm.pointer, out: w.h + r * H, count: H, epsilon: c.rmsNormEps)
            }
            // q, k, v share their input: quantized once, one pool call (see the grouped quantizedMatmul).
            quantizedMatmul([layer.query, layer.key, layer.value], w.h, m: rows, [w.q, w.k, w.v], pool: pool)
            for r in 0..<rows {
                if let b = layer.queryBias { Ops.axpy(1, b.pointer, w.q + r * Q, count: Q) }
                if let b = layer.keyBias { Ops.axpy(1, b.pointer, w.k + r * KV, count: KV) }
                if let b = layer.valueBias { Ops.axpy(1, b.pointer, w.v + r * KV, count: KV) }
                let position = w.rowPosition[r]
                Ops.rope(w.q + r * Q, heads: c.numAttentionHeads, headDim: D, position: position, theta: c.ropeTheta, layout: ropeLayout)
                Ops.rope(w.k + r * KV, heads: c.numKeyValueHeads, headDim: D, position: position, theta: c.ropeTheta, layout: ropeLayout)
                cache.store(sequence: batch[w.rowEntry[r]].sequence, position: position, layer: l,
                            key: w.k + r * KV, value: w.v + r * KV)
            }
            attention(batch: batch, layer: l, cache: cache)
            quantizedMatmul(layer.attentionOutput, w.attention, m: rows, w.projection, pool: pool)
            Ops.axpy(1, w.projection, w.x, count: rows * H)

            // Feed-forward block.
            for r in 0..<rows {
                Ops.rmsNorm(w.x + r * H, weight: layer.feedForwardNorm.pointer, out: w.h + r * H, count: H, epsilon: c.rmsNormEps)
            }
            quantizedMatmul([layer.gate, layer.up], w.h, m: rows, [w.gate, w.up], pool: pool)
            Ops.swiglu(gate: w.gate, up: w.up, out: w.gate, count: rows * F)
            quantizedMatmul(layer.down, w.gate, m: rows, w.projection, pool: pool)
            Ops.axpy(1, w.projection, w.x, count: rows * H)
        }

        // Final norm of the rows that want logits, then the output projection.
        var entryRows: [Range<Int>] = []
        entryRows.reserveCapacity(batch.count)
        var out = 0
        for (e, entry) in batch.enumerated() {
            let first = w.entryStart[e], n = entry.tokens.count
            let wanted: Range<Int> = switch entry.logits {
            case .none: first..<first
            case .last: (first + n - 1)..<(first + n)
            case .all: first..<(first + n)
            }
            entryRows.append(out..<(out + wanted.count))
            for r in wanted {
                Ops.rmsNorm(w.x + r * H, weight: weights.outputNorm.pointer, out: w.h + out * H, count: H, epsilon: c.rmsNormEps)
                out += 1
            }
        }
        if logitRows > 0 {
            quantizedMatmul(weights.output, w.h, m: logitRows, w.logits, pool: pool)
        }

        for entry in batch { entry.sequence.tokens.append(contentsOf: entry.tokens) }
        return BatchLogits(vocabularySize: c.vocabSize, pointer: UnsafePointer(w.logits), entryRows: entryRows)
    }

    // MARK: - Attention

    /// Query tokens per attention work item; with the group's heads this is the query tile that
    /// shares each loaded key/value tile.
    static let queryTokenTile = 16

    /// a[r, h] = Σ_p softmax_p(q[r,h]·k[p,g]/√D) v[p,g] over cached positions p ≤ position(r),
    /// g = h / (heads / kvHeads). Flash style: key tiles of one cache block, running max and sum per
    /// query, no score matrix beyond one tile. Work items (entry, kv head, query-token tile) are
    /// spread over the pool's threads, longest first, each to the least loaded thread.
    private func attention(batch: [SequenceInput], layer: Int, cache: KVCache) {
        let c = configuration, w = workspace
        let G = c.numKeyValueHeads
        let tile = Self.queryTokenTile
        w.items.removeAll(keepingCapacity: true)
        for (e, entry) in batch.enumerated() {
            let n = entry.tokens.count, start = entry.sequence.length
            for t0 in stride(from: 0, to: n, by: tile) {
                let t1 = min(n, t0 + tile)
                let cost = (t1 - t0) * (start + t1)
                for g in 0..<G { w.items.append(AttentionItem(entry: e, head: g, tokens: t0..<t1, cost: cost)) }
            }
        }
        let threads = pool.threads
        if threads > 1 {
            w.items.sort { $0.cost > $1.cost }
            var load = [Int](repeating: 0, count: threads)
            for i in w.items.indices {
                var best = 0
                for t in 1..<threads where load[t] < load[best] { best = t }
                w.items[i].thread = best
                load[best] += w.items[i].cost
            }
        }
        w.items.withUnsafeBufferPointer { items in
            pool.parallelFor(threads) { thread, range in
                for slot in range {
                    for item in items where item.thread == slot {
                        attend(item, entry: batch[item.entry], layer: layer, cache: cache, scratch: w.attentionScratch[thread])
                    }
                }
            }
        }
    }

    private func attend(_ item: AttentionItem, entry: SequenceInput, layer: Int, cache: KVCache, scratch s: AttentionScratch) {
        let c = configuration
        let D = c.headDim, Q = c.numAttentionHeads * D, B = cache.blockSize
        let rep = c.numAttentionHeads / c.numKeyValueHeads
        let g = item.head
        let start = entry.sequence.length
        let rowBase = workspace.entryStart[item.entry]
        let blocks = entry.sequence.blocks
        let scale = 1 / Float(D).squareRoot()
        let queries = item.tokens.count * rep
        // Class properties read once: inside the loops each read of a `var` property would be a
        // dynamic exclusivity check (a runtime call per score).
        let qBase = workspace.q, out = workspace.attention
        let scores = s.scores, maximum = s.maximum, sums = s.sum, accumulators = s.accumulator
        let keyTile = s.keys, valueTile = s.values
        for i in 0..<queries { maximum[i] = -.infinity; sums[i] = 0 }
        accumulators.update(repeating: 0, count: queries * D)

        let lastPosition = start + item.tokens.upperBound - 1
        for kb in 0...(lastPosition / B) {
            let count = min(B, lastPosition + 1 - kb * B)
            let keys = cache.tile(block: blocks[kb], layer: layer, value: false, head: g, count: count, scratch: keyTile)
            let values = cache.tile(block: blocks[kb], layer: layer, value: true, head: g, count: count, scratch: valueTile)
            for t in item.tokens {
                // Keys of this block that position start + t may see (causal).
                let visible = min(count, start + t + 1 - kb * B)
                if visible <= 0 { continue }
                for rr in 0..<rep {
                    let h = g * rep + rr
                    let query = UnsafePointer(qBase + (rowBase + t) * Q + h * D)
                    let i = (t - item.tokens.lowerBound) * rep + rr
                    var blockMax = -Float.infinity
                    for j in 0..<visible {
                        let score = dotProduct(query, keys + j * D, count: D) * scale
                        scores[j] = score
                        blockMax = max(blockMax, score)
                    }
                    let oldMax = maximum[i]
                    let newMax = max(oldMax, blockMax)
                    let accumulator = accumulators + i * D
                    if oldMax != -.infinity && oldMax != newMax {
                        let correction = Foundation.exp(oldMax - newMax)
                        sums[i] *= correction
                        scaleInPlace(accumulator, by: correction, count: D)
                    }
                    // The block's probabilities, 8 at a time (vectorized exp), then the weighted values.
                    for j in 0..<visible { scores[j] -= newMax }
                    Ops.expInPlace(scores, count: visible)
                    var sum: Float = 0
                    for j in 0..<visible {
                        sum += scores[j]
                        multiplyAdd(scores[j], values + j * D, accumulator, count: D)
                    }
                    sums[i] += sum
                    maximum[i] = newMax
                }
            }
        }
        for t in item.tokens {
            for rr in 0..<rep {
                let i = (t - item.tokens.lowerBound) * rep + rr
                let destination = out + (rowBase + t) * Q + (g * rep + rr) * D
                let inverse = 1 / sums[i]
                for d in 0..<D { destination[d] = accumulators[i * D + d] * inverse }
            }
        }
    }
}

// Inner loops of attention over one head vector (D = 64 or 128 in practice): inlined here rather
// than calls into Tensor's Ops, because at D = 64 the call overhead per key would rival the work
// (a decode step at 2,048 positions makes ~1.4 M of them). FMA on 8 lanes (vfmadd231ps ymm).
@inline(__always)
private func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
    var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    var i = 0
    while i + 16 <= n {
        s0 = s0.addingProduct(ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self),
                              rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        s1 = s1.addingProduct(ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self),
                              rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self))
        i += 16
    }
    var sum = (s0 + s1).sum()
    while i < n { sum += a[i] * b[i]; i += 1 }
    return sum
}

/// y += alpha · x over n floats.
@inline(__always)
private func multiplyAdd(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) {
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    let a = SIMD8<Float>(repeating: alpha)
    var i = 0
    while i + 8 <= n {
        let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            .addingProduct(a, rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self))
        ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] += alpha * x[i]; i += 1 }
}

@inline(__always)
private func scaleInPlace(_ y: UnsafeMutablePointer<Float>, by factor: Float, count n: Int) {
    for d in 0..<n { y[d] *= factor }
}

struct AttentionItem {
    var entry: Int
    var head: Int
    var tokens: Range<Int>
    var cost: Int
    var thread = 0
}

/// Per-thread attention scratch, sized for one work item: B = cache block size (grown on demand),
/// T = query-token tile × heads per kv head.
final class AttentionScratch: @unchecked Sendable {
    var capacityBlock = 0
    var keys: UnsafeMutablePointer<Float>        // [B, D] converted key tile
    var values: UnsafeMutablePointer<Float>      // [B, D] converted value tile
    var scores: UnsafeMutablePointer<Float>      // [B]
    let accumulator: UnsafeMutablePointer<Float> // [T, D]
    let maximum: UnsafeMutablePointer<Float>     // [T] running max
    let sum: UnsafeMutablePointer<Float>         // [T] running sum of exp

    init(queries: Int, headDim: Int, blockSize: Int) {
        capacityBlock = blockSize
        keys = .allocate(capacity: blockSize * headDim)
        values = .allocate(capacity: blockSize * headDim)
        scores = .allocate(capacity: blockSize)
        accumulator = .allocate(capacity: queries * headDim)
        maximum = .allocate(capacity: queries)
        sum = .allocate(capacity: queries)
    }

    deinit {
        keys.deallocate(); values.deallocate(); scores.deallocate()
        accumulator.deallocate(); maximum.deallocate(); sum.deallocate()
    }
}

/// Scratch of the forward step, allocated once and grown (never per token).
final class Workspace: @unchecked Sendable {
    let c: ModelConfiguration
    private(set) var rowCapacity = 0
    private(set) var logitCapacity = 0
    var x: UnsafeMutablePointer<Float> = .allocate(capacity: 1)          // [M, H] residual stream
    var h: UnsafeMutablePointer<Float> = .allocate(capacity: 1)          // [M, H] normed (also [R, H] before output)
    var q: UnsafeMutablePointer<Float> = .allocate(capacity: 1)          // [M, Q]
    var k: UnsafeMutablePointer<Float> = .allocate(capacity: 1)          // [M, KV]
    var v: UnsafeMutablePointer<Float> = .allocate(capacity: 1)          // [M, KV]
    var attention: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, Q]
    var projection: UnsafeMutablePointer<Float> = .allocate(capacity: 1) // [M, H]
    var gate: UnsafeMutablePointer<Float> = .allocate(capacity: 1)       // [M, F]
    var up: UnsafeMutablePointer<Float> = .allocate(capacity: 1)         // [M, F]
    var logits: UnsafeMutablePointer<Float> = .allocate(capacity: 1)     // [R, V]
    var rowEntry: [Int] = []
    var rowPosition: [Int] = []
    var entryStart: [Int] = []
    var items: [AttentionItem] = []
    var attentionScratch: [AttentionScratch] = []
    private let threads: Int

    init(configuration: ModelConfiguration, threads: Int) {
        c = configuration
        self.threads = threads
    }

    func ensureCapacity(rows: Int, logitRows: Int) {
        if rows > rowCapacity {
            let n = max(rows, rowCapacity * 2)
            let H = c.hiddenSize, Q = c.numAttentionHeads * c.headDim, KV = c.numKeyValueHeads * c.headDim
            let F = c.intermediateSize
            for p in [x, h, q, k, v, attention, projection, gate, up] { p.deallocate() }
            x = .allocate(capacity: n * H); h = .allocate(capacity: n * H)
            q = .allocate(capacity: n * Q); k = .allocate(capacity: n * KV); v = .allocate(capacity: n * KV)
            attention = .allocate(capacity: n * Q); projection = .allocate(capacity: n * H)
            gate = .allocate(capacity: n * F); up = .allocate(capacity: n * F)
            rowCapacity = n
            rowEntry.reserveCapacity(n); rowPosition.reserveCapacity(n)
        }
        if logitRows > logitCapacity {
            // Exactly what is asked: logit rows are large (V floats each) and callers bound them.
            logits.deallocate()
            logits = .allocate(capacity: logitRows * c.vocabSize)
            logitCapacity = logitRows
        }
        // h doubles as the [R, H] input of the output projection: R <= M always holds.
        if attentionScratch.isEmpty {
            let queries = Model.queryTokenTile * (c.numAttentionHeads / c.numKeyValueHeads)
            attentionScratch = (0..<threads).map { _ in AttentionScratch(queries: queries, headDim: c.headDim, blockSize: 64) }
        }
    }

    /// Makes sure the per-thread tiles hold a cache block of `blockSize` positions.
    func ensureBlockSize(_ blockSize: Int) {
        if let first = attentionScratch.first, first.capacityBlock >= blockSize { return }
        let queries = Model.queryTokenTile * (c.numAttentionHeads / c.numKeyValueHeads)
        attentionScratch = (0..<threads).map { _ in AttentionScratch(queries: queries, headDim: c.headDim, blockSize: blockSize) }
    }

    deinit {
        for p in [x, h, q, k, v, attention, projection, gate, up, logits] { p.deallocate() }
    }
}
