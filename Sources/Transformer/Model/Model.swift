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
    case none  // prefill chunk that is not the end of the prompt
    case last  // the next-token distribution (decode, last chunk of a prompt)
    case all  // every position (perplexity, tests)
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
    /// Restricts the logits `forward` computes (a draft model's, DraftVocabulary.swift); nil: every
    /// id. Set it before the model runs, not during a step.
    public var draftVocabulary: DraftVocabulary? {
        willSet { precondition(newValue.map { $0.tail.upperBound <= configuration.vocabSize } ?? true, "draft vocabulary past the model's") }
    }

    public init(configuration: ModelConfiguration, weights: ModelWeights, pool: ThreadPool, source: AnyObject? = nil) throws {
        let c = configuration
        switch c.ropeLayout {
        case .interleaved: ropeLayout = .interleaved
        case .halves: ropeLayout = .halves
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
    public func makeCache(
        memoryBudget: Int, precision: KVCache.Precision = .float16, blockSize: Int = 16,
        contextLength: Int? = nil
    ) throws -> KVCache {
        try KVCache(
            configuration: configuration, memoryBudget: memoryBudget, precision: precision,
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
                cache.store(
                    sequence: batch[w.rowEntry[r]].sequence, position: position, layer: l,
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
            if rows >= 4 {
                // Batched steps and prefill: split over the pool, or the other cores would idle
                // through rows × F exps (measured in docs/kernels.md, Threads).
                let gate = w.gate, up = w.up
                pool.parallelFor(rows * F, alignment: 64) { _, range in
                    Ops.swiglu(gate: gate + range.lowerBound, up: up + range.lowerBound, out: gate + range.lowerBound, count: range.count)
                }
            } else {
                Ops.swiglu(gate: w.gate, up: w.up, out: w.gate, count: rows * F)
            }
            quantizedMatmul(layer.down, w.gate, m: rows, w.projection, pool: pool)
            Ops.axpy(1, w.projection, w.x, count: rows * H)
        }

        // Final norm of the rows that want logits, then the output projection.
        var entryRows: [Range<Int>] = []
        entryRows.reserveCapacity(batch.count)
        var out = 0
        for (e, entry) in batch.enumerated() {
            let first = w.entryStart[e], n = entry.tokens.count
            let wanted: Range<Int> =
                switch entry.logits {
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
            if let draftVocabulary {
                restrictedLogits(draftVocabulary, input: w.h, rows: logitRows, logits: w.logits)
            } else {
                quantizedMatmul(weights.output, w.h, m: logitRows, w.logits, pool: pool)
            }
        }

        for entry in batch { entry.sequence.tokens.append(contentsOf: entry.tokens) }
        return BatchLogits(vocabularySize: c.vocabSize, pointer: UnsafePointer(w.logits), entryRows: entryRows)
    }

    // MARK: - Attention

    /// Query tokens per attention work item; with the group's heads this is the query tile that
    /// shares each loaded key/value tile.
    static let queryTokenTile = 32

    /// a[r, h] = Σ_p softmax_p(q[r,h]·k[p,g]/√D) v[p,g] over cached positions p ≤ position(r),
    /// g = h / (heads / kvHeads). Flash style: key tiles of ~64 positions, running max and sum per
    /// query, no score matrix beyond one tile; each key tile is converted once per work item and
    /// used by all its query rows (tokens × the group's heads). Work items (entry, kv head,
    /// query-token tile) are spread over the pool's threads, longest first, each to the least
    /// loaded thread.
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

    /// One work item: the query rows of `item.tokens` × the heads of kv head g (row i = token · rep +
    /// head within the group), over the cache in key tiles of `AttentionScratch.keyTile` positions.
    /// Per tile: S = Q·Kᵀ (AttentionTiles.scores), then per row the causal mask, the running max and
    /// sum and the rescaling of the row's output, then O += P·V (AttentionTiles.accumulate). Rows
    /// of tokens that see none of a tile (the diagonal) are skipped in groups of 4.
    private func attend(_ item: AttentionItem, entry: SequenceInput, layer: Int, cache: KVCache, scratch s: AttentionScratch) {
        let c = configuration
        let D = c.headDim, Q = c.numAttentionHeads * D
        let rep = c.numAttentionHeads / c.numKeyValueHeads
        let g = item.head
        let start = entry.sequence.length
        let rowBase = workspace.entryStart[item.entry]
        let blocks = entry.sequence.blocks
        let scale = 1 / Float(D).squareRoot()
        let t0 = item.tokens.lowerBound
        let rows = item.tokens.count * rep
        let paddedRows = (rows + 3) & ~3
        let Dp = s.paddedDim, tile = s.keyTile, ldk = s.paddedKeyTile
        // Class properties read once: inside the loops each read of a `var` property would be a
        // dynamic exclusivity check (a runtime call per score).
        let qBase = workspace.q, out = workspace.attention
        let queries = s.queries, scores = s.scores, maximum = s.maximum, sums = s.sum, output = s.output
        let keyTile = s.keys, valueTile = s.values

        // Queries packed [paddedRows, Dp], pre-scaled by 1/√D; padding rows and columns zero.
        queries.update(repeating: 0, count: paddedRows * Dp)
        for t in item.tokens {
            for rr in 0..<rep {
                let source = qBase + (rowBase + t) * Q + (g * rep + rr) * D
                let row = queries + ((t - t0) * rep + rr) * Dp
                for d in 0..<D { row[d] = source[d] * scale }
            }
        }
        for i in 0..<paddedRows { maximum[i] = -.infinity; sums[i] = 0 }
        output.update(repeating: 0, count: paddedRows * Dp)

        let end = start + item.tokens.upperBound  // positions 0..<end are attended to
        var first = 0
        while first < end {
            let count = min(tile, end - first)
            let keys = (count + 15) & ~15
            cache.gatherTile(
                blocks: blocks, first: first, count: count, layer: layer, head: g,
                keys: keyTile, ldk: ldk, values: valueTile, ldv: Dp)
            // Token t sees positions <= start + t: rows before `firstRow` see nothing of this tile.
            let firstToken = max(t0, first - start)
            let firstRow = ((firstToken - t0) * rep) & ~3
            let active = paddedRows - firstRow
            AttentionTiles.scores(
                q: queries + firstRow * Dp, ldq: Dp, rows: active, kt: keyTile, ldk: ldk,
                keys: keys, depth: D, s: scores + firstRow * ldk, lds: ldk)
            for i in firstRow..<paddedRows {
                let row = scores + i * ldk
                let visible = i < rows ? min(count, start + t0 + i / rep + 1 - first) : 0
                if visible <= 0 {
                    row.update(repeating: 0, count: keys)
                    continue
                }
                let blockMax = Ops.maximum(row, count: visible)
                let oldMax = maximum[i]
                let newMax = max(oldMax, blockMax)
                if oldMax != -.infinity && oldMax != newMax {
                    let correction = Foundation.exp(oldMax - newMax)
                    sums[i] *= correction
                    let o = output + i * Dp
                    for d in 0..<Dp { o[d] *= correction }
                }
                let sum = Ops.expShifted(row, count: visible, shift: newMax)
                if visible < keys { (row + visible).update(repeating: 0, count: keys - visible) }
                sums[i] += sum
                maximum[i] = newMax
            }
            AttentionTiles.accumulate(
                p: scores + firstRow * ldk, ldp: ldk, rows: active, keys: keys,
                v: valueTile, ldv: Dp, width: Dp, o: output + firstRow * Dp, ldo: Dp)
            first += count
        }
        for t in item.tokens {
            for rr in 0..<rep {
                let i = (t - t0) * rep + rr
                let destination = out + (rowBase + t) * Q + (g * rep + rr) * D
                let inverse = 1 / sums[i]
                for d in 0..<D { destination[d] = output[i * Dp + d] * inverse }
            }
        }
    }
}

struct AttentionItem {
    var entry: Int
    var head: Int
    var tokens: Range<Int>
    var cost: Int
    var thread = 0
}

/// Per-thread attention scratch, sized for one work item: R = query-token tile × heads per kv head
/// (rounded up to 4), Dp = head dim rounded up to 16, K = key tile rounded up to 16.
final class AttentionScratch: @unchecked Sendable {
    let keyTile: Int
    let paddedKeyTile: Int
    let paddedDim: Int
    let queries: UnsafeMutablePointer<Float>  // [R, Dp] packed, scaled queries
    let keys: UnsafeMutablePointer<Float>  // [D, K] transposed key tile
    let values: UnsafeMutablePointer<Float>  // [K, Dp] value tile
    let scores: UnsafeMutablePointer<Float>  // [R, K] scores, then probabilities
    let output: UnsafeMutablePointer<Float>  // [R, Dp] unnormalized outputs
    let maximum: UnsafeMutablePointer<Float>  // [R] running max
    let sum: UnsafeMutablePointer<Float>  // [R] running sum of exp

    /// Key tile: whole cache blocks, about 64 positions (with head dim 64, a 64-key tile of K and V
    /// is 32 KB in Float32 and stays in L1/L2 while every query row of the item uses it).
    static func keyTile(blockSize: Int) -> Int { blockSize * max(1, 64 / blockSize) }

    init(queryRows: Int, headDim: Int, blockSize: Int) {
        keyTile = Self.keyTile(blockSize: blockSize)
        paddedKeyTile = (keyTile + 15) & ~15
        paddedDim = (headDim + 15) & ~15
        let R = (queryRows + 3) & ~3
        queries = .allocate(capacity: R * paddedDim)
        keys = .allocate(capacity: headDim * paddedKeyTile)
        values = .allocate(capacity: paddedKeyTile * paddedDim)
        scores = .allocate(capacity: R * paddedKeyTile)
        output = .allocate(capacity: R * paddedDim)
        maximum = .allocate(capacity: R)
        sum = .allocate(capacity: R)
    }

    deinit {
        for p in [queries, keys, values, scores, output, maximum, sum] { p.deallocate() }
    }
}

/// Scratch of the forward step, allocated once and grown (never per token).
final class Workspace: @unchecked Sendable {
    let c: ModelConfiguration
    private(set) var rowCapacity = 0
    private(set) var logitCapacity = 0
    var x: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, H] residual stream
    var h: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, H] normed (also [R, H] before output)
    var q: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, Q]
    var k: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, KV]
    var v: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, KV]
    var attention: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, Q]
    var projection: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, H]
    var gate: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, F]
    var up: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [M, F]
    var logits: UnsafeMutablePointer<Float> = .allocate(capacity: 1)  // [R, V]
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
    }

    /// Makes sure the per-thread attention scratch is shaped for caches of `blockSize` positions.
    func ensureBlockSize(_ blockSize: Int) {
        if let first = attentionScratch.first, first.keyTile == AttentionScratch.keyTile(blockSize: blockSize) { return }
        let queries = Model.queryTokenTile * (c.numAttentionHeads / c.numKeyValueHeads)
        attentionScratch = (0..<threads).map { _ in AttentionScratch(queryRows: queries, headDim: c.headDim, blockSize: blockSize) }
    }

    deinit {
        for p in [x, h, q, k, v, attention, projection, gate, up, logits] { p.deallocate() }
    }
}
