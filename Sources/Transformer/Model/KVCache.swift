// The key/value cache: one shared pool of fixed-size blocks of positions, handed out to sequences
// through per-sequence block tables (vLLM's paged attention layout), so many conversations share one
// memory budget and a later step can share blocks between sequences with a common prefix.
//
// Shape letters: L layers, G key/value heads, D head dim, B positions per block (blockSize).
// One block holds, for B consecutive positions of one sequence, the keys and values of every layer:
//   block[b] = [L][2 (K, V)][G][B][D]
// so the keys of one head in one block are a contiguous B×D tile (what attention reads per tile).
import Foundation
import Tensor

/// Errors of the inference engine (cache room, context, batch shape). They describe a request the
/// caller can refuse or queue; none of them leaves the cache or a sequence half-updated.
public enum InferenceError: Error, CustomStringConvertible, Equatable {
    /// The pool has fewer free blocks than a step needs.
    case outOfCacheBlocks(needed: Int, free: Int, total: Int)
    /// A sequence would grow past the context limit (the smaller of the model's and the configured one).
    case contextLimitExceeded(sequenceLength: Int, adding: Int, limit: Int)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case invalidBatch(String)
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case let .outOfCacheBlocks(needed, free, total):
            "KV cache full: the step needs \(needed) more blocks, \(free) of \(total) are free (finish or cancel a sequence, or raise the cache budget)"
        case let .contextLimitExceeded(length, adding, limit):
            "context limit: a sequence of \(length) tokens cannot take \(adding) more (limit \(limit))"
        case let .tokenOutOfRange(token, vocab):
            "token id \(token) is outside the vocabulary (expected 0..<\(vocab))"
        case let .invalidBatch(message): "invalid batch: \(message)"
        case let .invalidConfiguration(message): "invalid configuration: \(message)"
        }
    }
}

/// A shared pool of KV blocks. Not thread-safe: the engine loop that owns the model owns the cache.
public final class KVCache: @unchecked Sendable {
    /// Float16 halves the memory (and the bytes attention reads) for a logit change far below the
    /// int8 activation quantization's; Float32 is exact and is what the reference tests use.
    public enum Precision: String, Sendable, CaseIterable {
        case float16, float32
        public var bytes: Int { self == .float16 ? 2 : 4 }
    }

    public let layers: Int
    public let kvHeads: Int
    public let headDim: Int
    public let blockSize: Int
    public let blockCount: Int
    public let precision: Precision
    /// Longest sequence allowed: min(model's maxPositionEmbeddings, configured context length).
    public let contextLength: Int

    /// Elements per block: L × 2 × G × B × D.
    let blockElements: Int
    /// Raw storage of blockCount blocks, Float16 or Float32 per `precision`.
    let storage: UnsafeMutableRawPointer
    private var freeBlocks: [Int32]
    /// Sequences referencing each block (a later issue shares prefix blocks; today 0 or 1).
    private var referenceCounts: [Int32]
    private var nextSequenceID = 0

    /// Bytes one position occupies (all layers, keys and values).
    public static func bytesPerPosition(_ c: ModelConfiguration, precision: Precision) -> Int {
        c.numHiddenLayers * 2 * c.numKeyValueHeads * c.headDim * precision.bytes
    }

    /// A pool of as many blocks as `memoryBudget` bytes hold.
    public convenience init(configuration: ModelConfiguration, memoryBudget: Int, precision: Precision = .float16,
                            blockSize: Int = 16, contextLength: Int? = nil) throws {
        let perBlock = Self.bytesPerPosition(configuration, precision: precision) * blockSize
        guard perBlock > 0, memoryBudget >= perBlock else {
            throw InferenceError.invalidConfiguration("KV cache budget of \(memoryBudget) bytes holds no block of \(perBlock) bytes")
        }
        try self.init(configuration: configuration, blockCount: memoryBudget / perBlock, precision: precision,
                      blockSize: blockSize, contextLength: contextLength)
    }

    public init(configuration c: ModelConfiguration, blockCount: Int, precision: Precision = .float16,
                blockSize: Int = 16, contextLength: Int? = nil) throws {
        guard blockSize > 0, blockCount > 0 else {
            throw InferenceError.invalidConfiguration("KV cache needs blockSize > 0 and blockCount > 0, found \(blockSize), \(blockCount)")
        }
        if let contextLength, contextLength <= 0 {
            throw InferenceError.invalidConfiguration("context length must be positive, found \(contextLength)")
        }
        layers = c.numHiddenLayers
        kvHeads = c.numKeyValueHeads
        headDim = c.headDim
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.precision = precision
        self.contextLength = min(c.maxPositionEmbeddings, contextLength ?? c.maxPositionEmbeddings)
        blockElements = layers * 2 * kvHeads * blockSize * headDim
        storage = .allocate(byteCount: blockCount * blockElements * precision.bytes, alignment: 64)
        freeBlocks = (0..<Int32(blockCount)).reversed().map { $0 }
        referenceCounts = Array(repeating: 0, count: blockCount)
    }

    deinit { storage.deallocate() }

    public var freeBlockCount: Int { freeBlocks.count }
    public var usedBlockCount: Int { blockCount - freeBlocks.count }
    public var bytes: Int { blockCount * blockElements * precision.bytes }

    /// Blocks a sequence of `length` positions occupies.
    public func blocksNeeded(forLength length: Int) -> Int { (length + blockSize - 1) / blockSize }

    /// A new, empty sequence (no blocks until its first tokens are processed).
    public func makeSequence() -> KVSequence {
        nextSequenceID += 1
        return KVSequence(id: nextSequenceID, cache: self)
    }

    /// Returns every block of `sequence` to the pool; the sequence is empty afterwards and may be reused.
    public func release(_ sequence: KVSequence) { truncate(sequence, to: 0) }

    /// Forgets the positions from `length` on (e.g. to reuse a shared conversation prefix).
    public func truncate(_ sequence: KVSequence, to length: Int) {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        precondition(length >= 0 && length <= sequence.length, "truncate to \(length) outside 0...\(sequence.length)")
        let keep = blocksNeeded(forLength: length)
        while sequence.blocks.count > keep {
            let block = sequence.blocks.removeLast()
            referenceCounts[Int(block)] -= 1
            if referenceCounts[Int(block)] == 0 { freeBlocks.append(block) }
        }
        sequence.tokens.removeSubrange(length...)
    }

    /// Allocates the blocks that `growth[i]` more positions of `sequences[i]` need, all or nothing.
    func reserve(_ sequences: [KVSequence], growth: [Int]) throws {
        var needed = 0
        for (s, n) in zip(sequences, growth) {
            needed += max(0, blocksNeeded(forLength: s.length + n) - s.blocks.count)
        }
        guard needed <= freeBlocks.count else {
            throw InferenceError.outOfCacheBlocks(needed: needed, free: freeBlocks.count, total: blockCount)
        }
        for (s, n) in zip(sequences, growth) {
            while s.blocks.count < blocksNeeded(forLength: s.length + n) {
                let block = freeBlocks.removeLast()
                referenceCounts[Int(block)] = 1
                s.blocks.append(block)
            }
        }
    }

    /// Element offset of the tile of (block, layer, K or V, head): keys are stored transposed, D×B
    /// (dimension-major, so that attention reads a row of B keys per dimension), values B×D.
    @inline(__always)
    func tileOffset(block: Int32, layer: Int, value: Bool, head: Int) -> Int {
        Int(block) * blockElements + (((layer * 2 + (value ? 1 : 0)) * kvHeads + head) * blockSize) * headDim
    }

    /// Stores the keys and values of one position: `key`, `value` are G×D (all heads of one token).
    func store(sequence: KVSequence, position: Int, layer: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let block = sequence.blocks[position / blockSize]
        let slot = position % blockSize
        for g in 0..<kvHeads {
            let kOffset = tileOffset(block: block, layer: layer, value: false, head: g) + slot
            let vOffset = tileOffset(block: block, layer: layer, value: true, head: g) + slot * headDim
            let k = key + g * headDim, v = value + g * headDim
            switch precision {
            case .float32:
                let base = storage.assumingMemoryBound(to: Float.self)
                for d in 0..<headDim { base[kOffset + d * blockSize] = k[d] }
                (base + vOffset).update(from: v, count: headDim)
            case .float16:
                let base = storage.assumingMemoryBound(to: Float16.self)
                for d in 0..<headDim {
                    base[kOffset + d * blockSize] = Float16(k[d])
                    base[vOffset + d] = Float16(v[d])
                }
            }
        }
    }

    /// One attention tile of (layer, head) as Float32: the keys of positions first..<first+count,
    /// transposed into `keys` (D rows of stride `ldk`, columns count..<ldk zero), and their values
    /// into `values` (rows of stride `ldv`, rows count..<ldk and columns D..<ldv zero). `first` is a
    /// multiple of the block size; `blocks` is the sequence's block table.
    func gatherTile(blocks: [Int32], first: Int, count: Int, layer: Int, head: Int,
                    keys: UnsafeMutablePointer<Float>, ldk: Int, values: UnsafeMutablePointer<Float>, ldv: Int) {
        let D = headDim, B = blockSize
        var position = first
        while position < first + count {
            let block = blocks[position / B]
            let n = min(B, first + count - position)
            let column = position - first
            let kOffset = tileOffset(block: block, layer: layer, value: false, head: head)
            let vOffset = tileOffset(block: block, layer: layer, value: true, head: head)
            switch precision {
            case .float32:
                let base = UnsafePointer(storage.assumingMemoryBound(to: Float.self))
                for d in 0..<D { (keys + d * ldk + column).update(from: base + kOffset + d * B, count: n) }
                for j in 0..<n { (values + (column + j) * ldv).update(from: base + vOffset + j * D, count: D) }
            case .float16:
                let base = UnsafePointer(storage.assumingMemoryBound(to: UInt16.self))
                for d in 0..<D { convertFloat16ToFloat(base + kOffset + d * B, keys + d * ldk + column, count: n) }
                if ldv == D {
                    convertFloat16ToFloat(base + vOffset, values + column * D, count: n * D)
                } else {
                    for j in 0..<n { convertFloat16ToFloat(base + vOffset + j * D, values + (column + j) * ldv, count: D) }
                }
            }
            position += n
        }
        if count < ldk {
            for d in 0..<D { (keys + d * ldk + count).update(repeating: 0, count: ldk - count) }
        }
        if ldv > D {
            for j in 0..<count { (values + j * ldv + D).update(repeating: 0, count: ldv - D) }
        }
        if count < ldk { (values + count * ldv).update(repeating: 0, count: (ldk - count) * ldv) }
    }
}

/// One sequence's view of the cache: its block table and the tokens whose keys and values are cached.
/// Created by `KVCache.makeSequence()`; return its blocks with `KVCache.release`.
public final class KVSequence: @unchecked Sendable {
    public let id: Int
    let cache: KVCache
    /// Block ids in position order: positions [i*B, (i+1)*B) live in blocks[i].
    var blocks: [Int32] = []
    /// Token ids processed so far (their K/V are cached); count == positions used.
    public internal(set) var tokens: [Int] = []

    init(id: Int, cache: KVCache) {
        self.id = id
        self.cache = cache
    }

    /// Positions cached so far (the position of the next token).
    public var length: Int { tokens.count }
    public var blockCount: Int { blocks.count }
}
