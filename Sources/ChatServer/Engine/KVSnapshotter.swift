// KV snapshots on the engine's side (the files are KVSnapshotStore's): the chains of ended
// requests that are only in memory, saved when the pool is about to evict one of their blocks or at
// shutdown; and a waiting request's snapshot, read off the engine thread before it is admitted.
//
// Engine thread only, except the finished loads, handed over under `lock`.
import Foundation
import Transformer

final class KVSnapshotter: @unchecked Sendable {
    let store: KVSnapshotStore
    private let cache: KVCache
    private let metrics: CacheMetrics
    /// Wakes the engine thread when a load finishes.
    private let notify: @Sendable () -> Void

    private struct Pending {
        var owner: KVSnapshotOwner
        var chain: KVChain
    }
    /// Chains of ended requests not on disk yet, and which of them each block belongs to.
    private var pending: [Int: Pending] = [:]
    private var pendingByBlock: [Int32: Set<Int>] = [:]
    private var nextPendingId = 0
    private var published = KVSnapshotStatistics()

    /// Loads finished since the engine last looked, by request id.
    private let lock = NSLock()
    private var finished: [UInt64: LoadedSnapshot?] = [:]

    init(store: KVSnapshotStore, cache: KVCache, metrics: CacheMetrics, notify: @escaping @Sendable () -> Void) {
        precondition(store.layout == cache.layout, "snapshot store of layout \(store.layout.tag) for a cache of \(cache.layout.tag)")
        self.store = store
        self.cache = cache
        self.metrics = metrics
        self.notify = notify
        cache.willEvictBlock = { [weak self] block in self?.blockWillBeEvicted(block) }
    }

    // MARK: - Saving

    /// A request of `owner` ends: its full blocks stay cached in memory; they are saved when the pool
    /// evicts one of them. The conversation's older chains still in memory are superseded.
    func requestEnded(owner: KVSnapshotOwner, sequence: KVSequence) {
        guard let chain = cache.chain(of: sequence) else { return }
        for (id, p) in pending where p.owner == owner && (!owner.conversation.isEmpty || chain.tokens.starts(with: p.chain.tokens)) {
            forget(id)
        }
        nextPendingId += 1
        pending[nextPendingId] = Pending(owner: owner, chain: chain)
        for block in chain.blocks { pendingByBlock[block, default: []].insert(nextPendingId) }
    }

    /// The pool is about to reuse `block`: every pending chain holding it goes to disk now (its
    /// blocks are all still intact: a chain's blocks are evicted tail first, and this is the first).
    private func blockWillBeEvicted(_ block: Int32) {
        guard let ids = pendingByBlock[block] else { return }
        for id in ids { save(id) }
    }

    private func save(_ id: Int) {
        guard let p = pending[id] else { return }
        forget(id)
        guard cache.isIntact(p.chain) else { return }
        let payload = KVSnapshotPayload(byteCount: p.chain.blockCount * cache.blockBytes)
        cache.copyBlocks(of: p.chain, to: payload.bytes)
        store.save(owner: p.owner, tokens: p.chain.tokens, payload: payload)
    }

    private func forget(_ id: Int) {
        guard let p = pending.removeValue(forKey: id) else { return }
        for block in p.chain.blocks {
            pendingByBlock[block]?.remove(id)
            if pendingByBlock[block]?.isEmpty == true { pendingByBlock[block] = nil }
        }
    }

    /// Saves every chain still only in memory and waits for the files (shutdown).
    func flush() {
        for id in pending.keys.sorted() { save(id) }
        store.waitForWrites()
        publishMetrics()
    }

    // MARK: - Loading

    /// For a request just taken in: when its user's snapshots hold more of its leading blocks than
    /// the pool has cached, starts reading them in the background and returns true; the request
    /// must not be admitted before `takeFinished` hands the result over.
    func startLoad(_ r: EngineRequest) -> Bool {
        let tokens = r.tokens
        let b = cache.blockSize
        guard tokens.count > b else { return false }
        let maxBlocks = min((tokens.count - 1) / b, cache.contextLength / b)
        let inMemory = cache.cachedPrefixBlocks(tokens)
        guard inMemory < maxBlocks else { return false }
        guard let match = store.bestMatch(user: r.job.userId, tokens: tokens, maxBlocks: maxBlocks, moreThan: inMemory) else {
            metrics.misses.increment()
            return false
        }
        let id = r.id
        let store = store
        DispatchQueue.global(qos: .userInitiated).async { [weak self] in
            let payload = store.load(match, tokens: tokens)
            guard let self else { return }
            let loaded = payload.map { LoadedSnapshot(payload: $0, blocks: match.blocks) }
            self.lock.withLock { _ = self.finished.updateValue(loaded, forKey: id) }
            self.notify()
        }
        return true
    }

    /// The loads finished since the last call (nil: the snapshot was unusable; recompute).
    func takeFinished() -> [UInt64: LoadedSnapshot?] {
        lock.withLock {
            defer { finished.removeAll() }
            return finished
        }
    }

    /// Puts the loaded blocks the sequence does not hold yet (it holds the cached prefix: whole
    /// blocks) after it. Returns the positions added (0 when the pool has no room: recompute).
    func attach(_ loaded: LoadedSnapshot, to sequence: KVSequence, tokens: [Int]) -> Int {
        let have = sequence.length / cache.blockSize
        guard loaded.blocks > have else { return 0 }
        do {
            try cache.attachLoadedBlocks(
                sequence, tokens: tokens, blocks: loaded.payload.bytes + have * cache.blockBytes, count: loaded.blocks - have)
        } catch {
            metrics.misses.increment()
            return 0
        }
        metrics.hits.increment()
        return (loaded.blocks - have) * cache.blockSize
    }

    /// A request whose snapshot could not be read: counted as a miss.
    func countFailedLoad() { metrics.misses.increment() }

    /// Brings the byte gauge and the eviction and damage counters up to the store's figures.
    func publishMetrics() {
        let s = store.statistics
        metrics.bytes.record(s.bytes)
        if s.evictions > published.evictions { metrics.evictions.increment(by: s.evictions - published.evictions) }
        if s.damaged > published.damaged { metrics.damaged.increment(by: s.damaged - published.damaged) }
        published = s
    }

}

/// Blocks read from a snapshot for a waiting request: the first `blocks` blocks of its tokens.
struct LoadedSnapshot: Sendable {
    let payload: KVSnapshotPayload
    let blocks: Int
}
