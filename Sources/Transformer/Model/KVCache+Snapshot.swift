// Moving whole blocks between the pool and a snapshot (KVSnapshotStore): a chain is a sequence's
// leading full, registered blocks; its bytes are the blocks as the pool stores them, in order, so a
// snapshot is valid only for a cache of the same layout (`KVCacheLayout`).

/// What a block's bytes mean: a snapshot made under one layout is never loaded under another.
public struct KVCacheLayout: Codable, Equatable, Hashable, Sendable {
    public var layers: Int
    public var kvHeads: Int
    public var headDim: Int
    public var blockSize: Int
    public var precision: String

    public init(layers: Int, kvHeads: Int, headDim: Int, blockSize: Int, precision: String) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.blockSize = blockSize
        self.precision = precision
    }

    /// Bytes of one block: L × 2 × G × B × D elements.
    public var blockBytes: Int { layers * 2 * kvHeads * blockSize * headDim * (KVCache.Precision(rawValue: precision)?.bytes ?? 0) }
    /// A short name for folder names: "L24-G2-D64-B16-float16".
    public var tag: String { "L\(layers)-G\(kvHeads)-D\(headDim)-B\(blockSize)-\(precision)" }
}

/// The leading full blocks of a sequence, as they were when it was taken: blocks and their index
/// nodes (a node changes when a block is evicted or reused, so a stale chain is detected).
public struct KVChain: Sendable {
    /// blockCount × blockSize tokens.
    public let tokens: [Int]
    public let blocks: [Int32]
    let nodes: [UInt64]
    public var blockCount: Int { blocks.count }
}

extension KVCache {
    public var layout: KVCacheLayout {
        KVCacheLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize, precision: precision.rawValue)
    }

    /// The registered leading full blocks of `sequence` (nil when there are none).
    public func chain(of sequence: KVSequence) -> KVChain? {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        let blocks = Array(sequence.blocks.prefix(sequence.publishedBlocks))
        let nodes = blocks.map(node(of:))
        let count = nodes.firstIndex(of: 0) ?? nodes.count
        guard count > 0 else { return nil }
        return KVChain(
            tokens: Array(sequence.tokens[0..<(count * blockSize)]), blocks: Array(blocks.prefix(count)),
            nodes: Array(nodes.prefix(count)))
    }

    /// Whether every block of `chain` still holds what it held when the chain was taken.
    public func isIntact(_ chain: KVChain) -> Bool {
        zip(chain.blocks, chain.nodes).allSatisfy { node(of: $0) == $1 }
    }

    /// Copies the chain's blocks, in order, to `destination` (blockCount × blockBytes bytes).
    public func copyBlocks(of chain: KVChain, to destination: UnsafeMutableRawPointer) {
        precondition(isIntact(chain), "copying a chain whose blocks were evicted")
        for (i, block) in chain.blocks.enumerated() {
            (destination + i * blockBytes).copyMemory(from: storage + Int(block) * blockBytes, byteCount: blockBytes)
        }
    }

    /// Full blocks of `tokens` cached in memory: what `attachCachedPrefix` would reuse now.
    public func cachedPrefixBlocks(_ tokens: [Int]) -> Int {
        guard tokens.count > 1 else { return 0 }
        return cachedBlockRun(tokens, maxBlocks: min((tokens.count - 1) / blockSize, contextLength / blockSize))
    }

    /// Appends to `sequence` blocks read from a snapshot: `blocks` holds `count` blocks (pool layout)
    /// for the positions `sequence.length ..< sequence.length + count × blockSize` of `tokens`. The
    /// sequence must hold whole blocks that start `tokens`. The new blocks are registered, so later
    /// requests share them. Throws `outOfCacheBlocks` when the pool has no room (nothing changes).
    public func attachLoadedBlocks(_ sequence: KVSequence, tokens: [Int], blocks: UnsafeRawPointer, count: Int) throws {
        precondition(sequence.cache === self, "sequence belongs to another cache")
        let start = sequence.length
        precondition(
            start % blockSize == 0 && sequence.publishedBlocks == sequence.blocks.count, "the sequence must hold whole, published blocks")
        precondition(
            start + count * blockSize <= tokens.count && Array(tokens[0..<start]) == sequence.tokens, "tokens do not extend the sequence")
        guard count > 0 else { return }
        try reserve([sequence], growth: [count * blockSize])
        for i in 0..<count {
            let block = sequence.blocks[start / blockSize + i]
            (storage + Int(block) * blockBytes).copyMemory(from: blocks + i * blockBytes, byteCount: blockBytes)
        }
        sequence.tokens += tokens[start..<(start + count * blockSize)]
        publishFullBlocks(sequence)
    }
}
