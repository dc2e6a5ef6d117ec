/// Byte-level BPE inside one pre-tokenized piece ("word"): the word's bytes start as single-byte
/// tokens, and adjacent pairs are merged by rank until no pair has a merge.
///
/// Tie-break (as Hugging Face `tokenizers` and llama.cpp): the pair with the lowest merge rank is
/// merged first; among equal ranks (the same pair occurring more than once) the leftmost goes first,
/// so "aaa" with merge "a a" becomes "aa" + "a".
///
/// Symbols live in a linked list over the word's byte positions; `rank[k]` caches the merge of the
/// pair starting at symbol k. Short words scan the list for the minimum (O(n²) with tiny constants);
/// long words (CJK runs have no spaces) use a min-heap keyed by (rank, position) with stale entries
/// skipped, O(n log n).
struct ByteLevelBPE {
    /// byte -> id of its single-byte token, or -1 if the vocabulary lacks it. [256]
    let byteTokens: [Int32]
    /// (left, right) -> (rank, merged id).
    let merges: PairMap
    /// Raw bytes -> id of the normal tokens (for `ignoreMerges`).
    let vocabulary: ByteStringMap
    /// Llama-3 (`ignore_merges` in its tokenizer.json): a word that is itself a token is emitted whole.
    let ignoreMerges: Bool
    /// Emitted for a byte the vocabulary has no token for (nil: the byte is dropped).
    let unknownTokenId: Int32?

    static let heapThreshold = 48
    static let cacheableLength = 64

    /// Appends the tokens of word p[0..<n] (n >= 1) to `out`.
    func encodeWord(_ p: UnsafePointer<UInt8>, _ n: Int, scratch: inout BPEScratch, out: inout [Int]) {
        if n == 1 {
            appendByte(p[0], &out)
            return
        }
        let cacheable = n <= Self.cacheableLength
        if cacheable, let start = scratch.cache.get(p, n) {
            let s = Int(start)
            let count = Int(scratch.cachedIds[s])
            for k in 0..<count { out.append(Int(scratch.cachedIds[s + 1 + k])) }
            return
        }
        let first = out.count
        if ignoreMerges, let id = vocabulary.get(p, n) {
            out.append(Int(id))
        } else {
            merge(p, n, scratch: &scratch, out: &out)
        }
        if cacheable {
            if scratch.cache.count >= BPEScratch.cacheEntryLimit || scratch.cachedIds.count >= BPEScratch.cachedIdLimit {
                scratch.clearCache()  // bounds the memory of a cache that sees endless new words
            }
            scratch.cache.set(p, n, Int32(scratch.cachedIds.count))
            scratch.cachedIds.append(Int32(out.count - first))
            for k in first..<out.count { scratch.cachedIds.append(Int32(out[k])) }
        }
    }

    @inline(__always)
    private func appendByte(_ b: UInt8, _ out: inout [Int]) {
        let id = byteTokens[Int(b)]
        if id >= 0 { out.append(Int(id)) } else if let unknownTokenId { out.append(Int(unknownTokenId)) }
    }

    private func merge(_ p: UnsafePointer<UInt8>, _ n: Int, scratch s: inout BPEScratch, out: inout [Int]) {
        s.prepare(n)
        // A byte without a token cannot take part in merges: it is a symbol of its own (-1).
        for k in 0..<n {
            s.symbol[k] = byteTokens[Int(p[k])]
            s.next[k] = Int32(k + 1)
            s.previous[k] = Int32(k - 1)
        }
        s.next[n - 1] = -1
        for k in 0..<(n - 1) { updatePair(k, &s) }
        s.rank[n - 1] = .max

        if n <= Self.heapThreshold {
            while true {
                var best = UInt32.max
                var bestIndex = -1
                var k = 0
                while k >= 0 {
                    if s.rank[k] < best { best = s.rank[k]; bestIndex = k }
                    k = Int(s.next[k])
                }
                if bestIndex < 0 { break }
                mergeAt(bestIndex, &s)
            }
        } else {
            s.heap.removeAll(keepingCapacity: true)
            for k in 0..<(n - 1) where s.rank[k] != .max { s.pushHeap(UInt64(s.rank[k]) << 32 | UInt64(k)) }
            while let top = s.popHeap() {
                let k = Int(top & 0xFFFF_FFFF)
                let r = UInt32(top >> 32)
                // Stale entry: the symbol was merged away (-2) or its pair changed since the push.
                guard s.symbol[k] != -2, s.rank[k] == r else { continue }
                let previous = Int(s.previous[k])
                mergeAt(k, &s)
                if s.rank[k] != .max { s.pushHeap(UInt64(s.rank[k]) << 32 | UInt64(k)) }
                if previous >= 0 && s.rank[previous] != .max {
                    s.pushHeap(UInt64(s.rank[previous]) << 32 | UInt64(previous))
                }
            }
        }
        var k = 0
        while k >= 0 {
            let id = s.symbol[k]
            if id >= 0 { out.append(Int(id)) } else { appendByte(p[k], &out) }
            k = Int(s.next[k])
        }
    }

    /// Merges symbol k with its right neighbour and refreshes the two pairs that changed.
    @inline(__always)
    private func mergeAt(_ k: Int, _ s: inout BPEScratch) {
        let j = Int(s.next[k])
        s.symbol[k] = s.merged[k]
        s.symbol[j] = -2
        let after = s.next[j]
        s.next[k] = after
        if after >= 0 { s.previous[Int(after)] = Int32(k) }
        updatePair(k, &s)
        let previous = Int(s.previous[k])
        if previous >= 0 { updatePair(previous, &s) }
    }

    @inline(__always)
    private func updatePair(_ k: Int, _ s: inout BPEScratch) {
        let j = Int(s.next[k])
        let left = s.symbol[k]
        guard j >= 0, left >= 0, s.symbol[j] >= 0 else { s.rank[k] = .max; return }
        // A small direct-mapped cache in front of the merge table: the table is megabytes and each
        // miss costs a trip to memory, while words keep asking about the same few thousand pairs.
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: s.symbol[j]))
        let line = Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 50) & (BPEScratch.pairCacheLines - 1)
        let packed: UInt64
        if s.pairCache[2 * line] == key {
            packed = s.pairCache[2 * line + 1]
        } else {
            packed = merges.lookup(left, s.symbol[j])
            s.pairCache[2 * line] = key
            s.pairCache[2 * line + 1] = packed
        }
        if packed == .max {
            s.rank[k] = .max
        } else {
            s.rank[k] = UInt32(packed >> 32)
            s.merged[k] = Int32(truncatingIfNeeded: packed)
        }
    }
}

/// Work arrays of `ByteLevelBPE` (one entry per byte of the word) and its word cache; owned by
/// one encoding call at a time. Raw memory: the merge loop reads and writes them constantly.
struct BPEScratch: ~Copyable {
    /// Cache bounds: about 65k words and 1M cached ids (a few MB per scratch).
    static let cacheEntryLimit = 1 << 16
    static let cachedIdLimit = 1 << 20

    private(set) var capacity = 0
    var symbol = UnsafeMutablePointer<Int32>.allocate(capacity: 1)  // token id of symbol k; -2 once merged into its left neighbour
    var next = UnsafeMutablePointer<Int32>.allocate(capacity: 1)  // index of the next symbol, -1 at the end
    var previous = UnsafeMutablePointer<Int32>.allocate(capacity: 1)  // index of the previous symbol, -1 at the start
    var rank = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)  // merge rank of (k, next[k]), UInt32.max if none
    var merged = UnsafeMutablePointer<Int32>.allocate(capacity: 1)  // the token that merge produces
    var heap: [UInt64] = []  // rank << 32 | position, min at 0
    /// Direct-mapped cache of merge look-ups: [key, packed value] per line, key UInt64.max if empty.
    static let pairCacheLines = 1 << 14
    let pairCache: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 2 * BPEScratch.pairCacheLines)
        p.initialize(repeating: .max, count: 2 * BPEScratch.pairCacheLines)
        return p
    }()
    /// Word bytes -> offset in `cachedIds` of [count, id, id, ...].
    var cache = ByteStringMap(capacity: 4096)
    var cachedIds: [Int32] = []

    deinit {
        symbol.deallocate(); next.deallocate(); previous.deallocate(); rank.deallocate(); merged.deallocate()
        pairCache.deallocate()
    }

    mutating func prepare(_ n: Int) {
        guard capacity < n else { return }
        symbol.deallocate(); next.deallocate(); previous.deallocate(); rank.deallocate(); merged.deallocate()
        capacity = max(n, 2 * capacity, 64)
        symbol = .allocate(capacity: capacity)
        next = .allocate(capacity: capacity)
        previous = .allocate(capacity: capacity)
        rank = .allocate(capacity: capacity)
        merged = .allocate(capacity: capacity)
    }

    mutating func clearCache() {
        cache.removeAll()
        cachedIds.removeAll(keepingCapacity: true)
    }

    mutating func pushHeap(_ value: UInt64) {
        heap.append(value)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent] <= heap[i] { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    mutating func popHeap() -> UInt64? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var m = l
            if l + 1 < n && heap[l + 1] < heap[l] { m = l + 1 }
            if heap[i] <= heap[m] { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}
