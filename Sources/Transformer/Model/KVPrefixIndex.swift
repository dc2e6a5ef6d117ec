// Automatic prefix caching for the paged KV cache (vLLM's idea, llama.cpp's `cache_prompt`): a chat
// resends its whole history every turn, and many requests start with the same system prompt. A
// full block's keys and values depend only on the tokens at and before its positions, so a block
// whose tokens and predecessors match a new prompt can be shared instead of recomputed.
//
// The index names each full block by (its predecessor's node, its own B tokens). A node is a number
// given to a block when it is registered and never reused, so when a block is evicted its cached
// successors can never be matched again (their key names a node no block has), even if the block's
// storage comes back with other tokens. Keys hold the tokens themselves, not a hash of them: a
// match is exact, never a collision.
//
// Registered blocks that no sequence references stay in the index as "cached" blocks, kept in
// least-recently-released order and evicted only when the pool needs room.

/// A full block's identity: the node of the block before it (0 for the first) and its tokens.
struct PrefixKey: Hashable {
    var parent: UInt64
    var tokens: [Int]
}

/// The index and the eviction order of cached blocks. Part of `KVCache`; not thread-safe.
struct KVPrefixIndex {
    private var table: [PrefixKey: Int32] = [:]
    /// Per block: its key and node while registered.
    private var keys: [PrefixKey?]
    private(set) var nodes: [UInt64]
    private var nextNode: UInt64 = 1
    // A doubly linked list of the cached blocks (registered, referenced by no sequence), oldest first.
    private var previous: [Int32]
    private var next: [Int32]
    private var oldest: Int32 = -1
    private var newest: Int32 = -1
    private(set) var cachedCount = 0

    init(blockCount: Int) {
        keys = Array(repeating: nil, count: blockCount)
        nodes = Array(repeating: 0, count: blockCount)
        previous = Array(repeating: -1, count: blockCount)
        next = Array(repeating: -1, count: blockCount)
    }

    func isRegistered(_ block: Int32) -> Bool { nodes[Int(block)] != 0 }

    /// The registered block with this key, if any.
    func lookup(_ key: PrefixKey) -> Int32? { table[key] }

    /// Gives `block` the identity `key` (a block of a live sequence that just became full).
    mutating func register(_ block: Int32, key: PrefixKey) {
        precondition(table[key] == nil && !isRegistered(block), "block \(block) is already registered")
        table[key] = block
        keys[Int(block)] = key
        nodes[Int(block)] = nextNode
        nextNode += 1
    }

    /// Forgets `block`'s identity (before its storage is reused or rewritten).
    mutating func unregister(_ block: Int32) {
        guard let key = keys[Int(block)] else { return }
        table[key] = nil
        keys[Int(block)] = nil
        nodes[Int(block)] = 0
    }

    /// A registered block that no sequence references any more: the newest cached block.
    mutating func cache(_ block: Int32) {
        let b = Int(block)
        previous[b] = newest
        next[b] = -1
        if newest >= 0 { next[Int(newest)] = block } else { oldest = block }
        newest = block
        cachedCount += 1
    }

    /// A cached block taken back by a sequence (a prefix match): out of the eviction order.
    mutating func uncache(_ block: Int32) {
        let b = Int(block)
        if previous[b] >= 0 { next[Int(previous[b])] = next[b] } else { oldest = next[b] }
        if next[b] >= 0 { previous[Int(next[b])] = previous[b] } else { newest = previous[b] }
        previous[b] = -1
        next[b] = -1
        cachedCount -= 1
    }

    /// The least recently released cached block (the next `evictOldest`).
    var oldestCached: Int32? { oldest >= 0 ? oldest : nil }

    /// Removes the least recently released cached block from the index and returns it (now free).
    mutating func evictOldest() -> Int32? {
        guard oldest >= 0 else { return nil }
        let block = oldest
        uncache(block)
        unregister(block)
        return block
    }
}
