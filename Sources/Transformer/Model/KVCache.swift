// The key/value cache: one shared pool of fixed-size blocks of positions, handed out to sequences
// through per-sequence block tables (vLLM's paged attention layout), so many conversations share one
// memory budget and a later step can share blocks between sequences with a common prefix.
//
// Shape letters: L layers, G key/value heads, D head dim, B positions per block (blockSize).
// One block holds, for B consecutive positions of one sequence, the keys and values of every layer:
//   block[b] = [L][2 (K, V)][G][B][D]
// so the keys of one head in one block are a contiguous B×D tile (what attention reads per tile).
//
// Full blocks can be shared between sequences with a common prefix (see KVPrefixIndex): a block
// holds a reference count, and a registered block nobody references stays cached until the pool
// needs its room.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
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
    /// Raw storage of blockCount blocks, Float16 or Float32 per `precision`: an anonymous mapping,
    /// page-aligned, so the pages of unused blocks can be given back (`releaseUnusedMemory`).
    let storage: UnsafeMutableRawPointer
    private let storageBytes: Int
    /// Blocks nobody references and no prefix is cached in.
    private var freeBlocks: [Int32]
    /// Sequences referencing each block (more than one when a prefix is shared).
    private var referenceCounts: [Int32]
    /// Full blocks by content, and the cached ones (registered, unreferenced) in eviction order.
    private var prefix: KVPrefixIndex
    /// Blocks handed out since the last `releaseUnusedMemory` (their pages may be resident).
    private var touched: [Bool]
    private var nextSequenceID = 0
    /// Called with a cached block just before it is evicted (its storage is still intact and its
    /// predecessors still registered): the engine saves chains to disk from here. Must not change the cache.
    public var willEvictBlock: ((Int32) -> Void)?

    /// Bytes one position occupies (all layers, keys and values).
    public static func bytesPerPosition(_ c: ModelConfiguration, precision: Precision) -> Int {
        c.numHiddenLayers * 2 * c.numKeyValueHeads * c.headDim * precision.bytes
    }

    /// A pool of as many blocks as `memoryBudget` bytes hold.
    public convenience init(
        configuration: ModelConfiguration, memoryBudget: Int, precision: Precision = .float16,
        blockSize: Int = 16, contextLength: Int? = nil
    ) throws {
        let perBlock = Self.bytesPerPosition(configuration, precision: precision) * blockSize
        guard perBlock > 0, memoryBudget >= perBlock else {
            throw InferenceError.invalidConfiguration("KV cache budget of \(memoryBudget) bytes holds no block of \(perBlock) bytes")
        }
        try self.init(
            configuration: configuration, blockCount: memoryBudget / perBlock, precision: precision,
            blockSize: blockSize, contextLength: contextLength)
    }

    public init(
        configuration c: ModelConfiguration, blockCount: Int, precision: Precision = .float16,
        blockSize: Int = 16, contextLength: Int? = nil
    ) throws {
        guard blockSize > 0, blockCount > 0 else {
            throw InferenceError.invalidConfiguration("KV cache needs blockSize > 0 and blockCount > 0, found \(blockSize), \(blockCount)")
        }
        guard blockCount <= Int(Int32.max) else {  // block ids are Int32
            throw InferenceError.invalidConfiguration("a KV cache of \(blockCount) blocks is too large (at most \(Int32.max))")
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
        storageBytes = blockCount * blockElements * precision.bytes
        guard let pointer = mmap(nil, storageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            pointer != MAP_FAILED
        else {
            throw InferenceError.invalidConfiguration(
                "cannot reserve \(storageBytes >> 20) MiB for the KV cache (\(blockCount) blocks): \(String(cString: strerror(errno)))")
        }
        storage = pointer
        freeBlocks = (0..<Int32(blockCount)).reversed().map { $0 }
        referenceCounts = Array(repeating: 0, count: blockCount)
        prefix = KVPrefixIndex(blockCount: blockCount)
        touched = Array(repeating: false, count: blockCount)
    }

    deinit { munmap(storage, storageBytes) }

    /// Blocks a step can get: the free ones and the cached ones (evicted on demand).
    public var freeBlockCount: Int { freeBlocks.count + prefix.cachedCount }
    /// Blocks referenced by sequences.
    public var usedBlockCount: Int { blockCount - freeBlockCount }
    /// Blocks that hold a cached prefix nobody references (counted as free).
    public var cachedBlockCount: Int { prefix.cachedCount }
    public var bytes: Int { storageBytes }
    /// Bytes one block occupies (all layers, keys and values of `blockSize` positions).
    public var blockBytes: Int { blockElements * precision.bytes }

    /// Blocks a sequence of `length` positions occupies.
    public func blocksNeeded(forLength length: Int) -> Int { (length + blockSize - 1) / blockSize }

    /// Blocks that releasing `sequence` would give back to the pool (those no other sequence shares).
    public func releasableBlockCount(_ sequence: KVSequence) -> Int {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        return sequence.blocks.reduce(0) { $0 + (referenceCounts[Int($1)] == 1 ? 1 : 0) }
    }

    /// A new, empty sequence (no blocks until its first tokens are processed).
    public func makeSequence() -> KVSequence {
        nextSequenceID += 1
        return KVSequence(id: nextSequenceID, cache: self)
    }

    /// Returns every block of `sequence` to the pool (its full, registered blocks stay cached); the
    /// sequence is empty afterwards and may be reused.
    public func release(_ sequence: KVSequence) { truncate(sequence, to: 0) }

    /// Forgets the positions from `length` on (e.g. to reuse a shared conversation prefix) and
    /// returns the length kept: `length`, or less when `length` falls inside a block that another
    /// sequence shares (that block cannot be rewritten, so the sequence keeps only whole blocks).
    @discardableResult
    public func truncate(_ sequence: KVSequence, to length: Int) -> Int {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        precondition(length >= 0 && length <= sequence.length, "truncate to \(length) outside 0...\(sequence.length)")
        var length = length
        if length < sequence.length && length % blockSize != 0 {
            // The kept part of this block will be followed by new positions: it leaves the index.
            let block = sequence.blocks[length / blockSize]
            if referenceCounts[Int(block)] > 1 { length -= length % blockSize } else { prefix.unregister(block) }
        }
        let keep = blocksNeeded(forLength: length)
        while sequence.blocks.count > keep { drop(sequence.blocks.removeLast()) }
        sequence.tokens.removeSubrange(length...)
        sequence.publishedBlocks = min(sequence.publishedBlocks, length / blockSize)
        return length
    }

    /// One reference to `block` fewer; unreferenced, it becomes cached (registered) or free.
    private func drop(_ block: Int32) {
        referenceCounts[Int(block)] -= 1
        guard referenceCounts[Int(block)] == 0 else { return }
        if prefix.isRegistered(block) { prefix.cache(block) } else { freeBlocks.append(block) }
    }

    /// One reference to `block` more (a cached block leaves the eviction order).
    private func retain(_ block: Int32) {
        if referenceCounts[Int(block)] == 0 { prefix.uncache(block) }
        referenceCounts[Int(block)] += 1
    }

    /// Allocates the blocks that `growth[i]` more positions of `sequences[i]` need, all or nothing:
    /// free blocks first, then the least recently released cached ones.
    func reserve(_ sequences: [KVSequence], growth: [Int]) throws {
        var needed = 0
        for (s, n) in zip(sequences, growth) {
            needed += max(0, blocksNeeded(forLength: s.length + n) - s.blocks.count)
        }
        guard needed <= freeBlockCount else {
            throw InferenceError.outOfCacheBlocks(needed: needed, free: freeBlockCount, total: blockCount)
        }
        for (s, n) in zip(sequences, growth) {
            while s.blocks.count < blocksNeeded(forLength: s.length + n) {
                let block = freeBlocks.popLast() ?? evictOldestCached()!
                referenceCounts[Int(block)] = 1
                touched[Int(block)] = true
                s.blocks.append(block)
            }
        }
    }

    // MARK: - Prefix sharing

    /// Attaches to the empty `sequence` the longest run of cached full blocks that starts `tokens`,
    /// leaving at least the last token to compute (its logits are needed). Returns the positions
    /// reused; the caller feeds `tokens[returned...]`.
    @discardableResult
    public func attachCachedPrefix(_ sequence: KVSequence, tokens: [Int]) -> Int {
        precondition(sequence.cache === self && sequence.length == 0, "attach to an empty sequence of this cache")
        guard tokens.count > 1 else { return 0 }
        let limit = min((tokens.count - 1) / blockSize, contextLength / blockSize)
        var parent: UInt64 = 0
        for i in 0..<limit {
            let key = PrefixKey(parent: parent, tokens: Array(tokens[(i * blockSize)..<((i + 1) * blockSize)]))
            guard let block = prefix.lookup(key) else { break }
            retain(block)
            sequence.blocks.append(block)
            parent = prefix.nodes[Int(block)]
        }
        sequence.tokens = Array(tokens[0..<(sequence.blocks.count * blockSize)])
        sequence.publishedBlocks = sequence.blocks.count
        return sequence.length
    }

    /// Registers the blocks of `sequence` that became full since the last call, so later sequences
    /// can share them. A block whose content is already cached (two requests with the same prefix
    /// computed side by side) is swapped for the cached one and returns to the pool.
    public func publishFullBlocks(_ sequence: KVSequence) {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        let full = sequence.length / blockSize
        while sequence.publishedBlocks < full {
            let i = sequence.publishedBlocks
            let parent = i == 0 ? 0 : prefix.nodes[Int(sequence.blocks[i - 1])]
            if i > 0 && parent == 0 { return }  // cannot happen: published blocks stay registered
            let mine = sequence.blocks[i]
            if !prefix.isRegistered(mine) {
                let key = PrefixKey(parent: parent, tokens: Array(sequence.tokens[(i * blockSize)..<((i + 1) * blockSize)]))
                if let existing = prefix.lookup(key) {
                    retain(existing)
                    sequence.blocks[i] = existing
                    drop(mine)
                } else {
                    prefix.register(mine, key: key)
                }
            }
            sequence.publishedBlocks += 1
        }
    }

    /// Evicts the least recently released cached blocks until at most `keep` remain. They go to the
    /// top of the free stack, so the next allocations reuse their (resident) pages before touching
    /// new ones: the pool's resident memory stays near the blocks in use plus `keep`.
    public func evictCachedBlocks(keeping keep: Int) {
        while prefix.cachedCount > max(0, keep), let block = evictOldestCached() { freeBlocks.append(block) }
    }

    /// The least recently released cached block, out of the index (the observer sees it first).
    private func evictOldestCached() -> Int32? {
        if let block = prefix.oldestCached { willEvictBlock?(block) }
        return prefix.evictOldest()
    }

    /// The node the prefix index gave `block` (0: not registered); changes whenever its content may.
    func node(of block: Int32) -> UInt64 { prefix.nodes[Int(block)] }

    /// Registered full blocks whose tokens start `tokens`, without attaching them (as
    /// `attachCachedPrefix` would find them, at most `maxBlocks`).
    func cachedBlockRun(_ tokens: [Int], maxBlocks: Int) -> Int {
        var parent: UInt64 = 0
        for i in 0..<maxBlocks {
            let key = PrefixKey(parent: parent, tokens: Array(tokens[(i * blockSize)..<((i + 1) * blockSize)]))
            guard let block = prefix.lookup(key) else { return i }
            parent = prefix.nodes[Int(block)]
        }
        return maxBlocks
    }

    /// Evicts cached blocks beyond `keepingCachedBlocks` (least recently released first) and gives
    /// the pages of every free block used since the last call back to the system (madvise
    /// DONTNEED: they read as zeros when reused, and every position is written before it is read).
    /// The engine calls this when it goes idle, so the memory returns to its idle level plus the
    /// cached prefixes it keeps.
    public func releaseUnusedMemory(keepingCachedBlocks keep: Int) {
        evictCachedBlocks(keeping: keep)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Runs of consecutive free blocks that contain a touched one: one madvise each, over the
        // pages wholly inside the run (a page shared with a block in use stays).
        func advise(_ run: (first: Int, end: Int, touched: Bool)) {
            guard run.touched else { return }
            let from = (run.first * blockBytes + page - 1) / page * page
            let to = run.end * blockBytes / page * page
            if to > from { _ = madvise(storage + from, to - from, MADV_DONTNEED) }
        }
        var run: (first: Int, end: Int, touched: Bool)?
        for block in freeBlocks.sorted() {
            let b = Int(block)
            if let r = run, r.end == b {
                run = (r.first, b + 1, r.touched || touched[b])
            } else {
                if let r = run { advise(r) }
                run = (b, b + 1, touched[b])
            }
            touched[b] = false
        }
        if let r = run { advise(r) }
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
    func gatherTile(
        blocks: [Int32], first: Int, count: Int, layer: Int, head: Int,
        keys: UnsafeMutablePointer<Float>, ldk: Int, values: UnsafeMutablePointer<Float>, ldv: Int
    ) {
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
    /// Leading full blocks already registered in the prefix index (`KVCache.publishFullBlocks`).
    var publishedBlocks = 0

    init(id: Int, cache: KVCache) {
        self.id = id
        self.cache = cache
    }

    /// Positions cached so far (the position of the next token).
    public var length: Int { tokens.count }
    public var blockCount: Int { blocks.count }
}
