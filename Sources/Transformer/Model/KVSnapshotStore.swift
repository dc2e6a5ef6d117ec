// KV snapshots on disk: chains of full blocks of idle conversations, saved when the pool evicts them
// (or at shutdown) and loaded instead of recomputed when a later prompt of the same user starts with
// them. One file per chain (KVSnapshotFile) in a folder per model checksum and cache layout, so a
// snapshot is never applied to other weights or another block format. A byte budget is kept by
// deleting the least recently used files. Damaged, truncated or foreign files are deleted, never used.
//
// Thread-safe: the index is under a lock; writes and deletions run in order on one serial queue;
// loads run on the caller's thread (the engine calls them off its own thread).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Whose chain a snapshot is: lookups see only the user's snapshots; a conversation's go with it.
public struct KVSnapshotOwner: Hashable, Sendable {
    public var user: Int64
    /// Empty for requests outside a stored conversation (the OpenAI API).
    public var conversation: String
    public init(user: Int64, conversation: String) {
        self.user = user
        self.conversation = conversation
    }
}

/// Block bytes owned by one snapshot on its way to or from disk (64-byte aligned).
public final class KVSnapshotPayload: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let count: Int
    public init(byteCount: Int) {
        bytes = .allocate(byteCount: max(1, byteCount), alignment: 64)
        count = byteCount
    }
    deinit { bytes.deallocate() }
}

/// A snapshot whose first `blocks` blocks start a prompt.
public struct KVSnapshotMatch: Sendable, Equatable {
    let file: String
    public let blocks: Int
}

public struct KVSnapshotStatistics: Sendable, Equatable {
    public var files = 0
    public var bytes = 0
    /// Files deleted to keep the budget.
    public var evictions = 0
    /// Files found damaged, truncated or foreign (deleted).
    public var damaged = 0
    public var writes = 0
    public init() {}
}

public final class KVSnapshotStore: @unchecked Sendable {
    /// This model's and layout's folder.
    public let directory: String
    public let model: String
    public let layout: KVCacheLayout
    public let budgetBytes: Int

    private struct Entry {
        var owner: KVSnapshotOwner
        var tokens: [Int]
        var bytes: Int
        var lastUsed: Double
        /// The blocks while their file is being written (loads copy from here meanwhile).
        var writing: KVSnapshotPayload?
    }
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    /// Conversations deleted while this process runs: a chain of theirs still in memory is never saved.
    private var deleted: Set<KVSnapshotOwner> = []
    private var stats = KVSnapshotStatistics()
    private let queue = DispatchQueue(label: "sarvam.kv-snapshots")

    /// Opens (creating) `root/<model>-<layout>` and indexes the snapshots there, deleting the ones
    /// that are damaged or made for something else, then those beyond the budget.
    public init(root: String, model: String, layout: KVCacheLayout, budgetBytes: Int) throws {
        guard layout.blockBytes > 0 else { throw InferenceError.invalidConfiguration("KV snapshot layout \(layout.tag) has no bytes") }
        self.model = model
        self.layout = layout
        self.budgetBytes = max(0, budgetBytes)
        directory = (root as NSString).appendingPathComponent("\(model)-\(layout.tag)")
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw InferenceError.invalidConfiguration("cannot create the KV snapshot folder \(directory): \(error)")
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = (directory as NSString).appendingPathComponent(name)
            guard name.hasSuffix(".kvs") else {
                if name.hasSuffix(".kvs.tmp") { unlink(path) }  // a write cut short
                continue
            }
            do {
                let reader = try KVSnapshotFile.Reader(path: path)
                reader.close()
                guard reader.header.model == model, reader.header.layout == layout else {
                    throw KVSnapshotFileError(path: path, message: "made for another model or layout")
                }
                let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? nil
                entries[name] = Entry(
                    owner: KVSnapshotOwner(user: reader.header.user, conversation: reader.header.conversation),
                    tokens: reader.header.tokens, bytes: reader.dataOffset + reader.header.blockChecksums.count * reader.blockBytes,
                    lastUsed: modified?.timeIntervalSince1970 ?? 0)
            } catch {
                unlink(path)
                stats.damaged += 1
            }
        }
        for name in lock.withLock({ evictLocked(toFit: 0) }) { unlink((directory as NSString).appendingPathComponent(name)) }
    }

    public var statistics: KVSnapshotStatistics {
        lock.withLock {
            var s = stats
            s.files = entries.count
            s.bytes = entries.values.reduce(0) { $0 + $1.bytes }
            return s
        }
    }

    // MARK: - Lookup and load

    /// The snapshot of `user` sharing the most whole blocks with the start of `tokens` (at most
    /// `maxBlocks`), if one shares more than `moreThan` blocks.
    public func bestMatch(user: Int64, tokens: [Int], maxBlocks: Int, moreThan: Int = 0) -> KVSnapshotMatch? {
        let b = layout.blockSize
        return lock.withLock {
            var best: KVSnapshotMatch?
            for (file, entry) in entries where entry.owner.user == user {
                let limit = min(maxBlocks, entry.tokens.count / b, tokens.count / b)
                var n = 0
                while n < limit && entry.tokens[(n * b)..<((n + 1) * b)] == tokens[(n * b)..<((n + 1) * b)] { n += 1 }
                if n > max(moreThan, best?.blocks ?? 0) { best = KVSnapshotMatch(file: file, blocks: n) }
            }
            return best
        }
    }

    /// Reads the matched blocks (blocking: call it off the engine thread), after checking that the
    /// file is still this model's and layout's and holds exactly these tokens. A damaged file is
    /// deleted and nil returned (the caller recomputes); so is a file deleted meanwhile.
    public func load(_ match: KVSnapshotMatch, tokens: [Int]) -> KVSnapshotPayload? {
        let path = (directory as NSString).appendingPathComponent(match.file)
        let count = match.blocks * layout.blockSize
        enum Source { case gone, writing(KVSnapshotPayload), file }
        let source: Source = lock.withLock {
            guard let entry = entries[match.file], count <= entry.tokens.count, entry.tokens[0..<count] == tokens[0..<count] else {
                return .gone
            }
            entries[match.file]?.lastUsed = Date().timeIntervalSince1970
            return entry.writing.map { .writing($0) } ?? .file
        }
        switch source {
        case .gone: return nil  // deleted or evicted meanwhile
        case .writing(let blocks):
            let payload = KVSnapshotPayload(byteCount: match.blocks * layout.blockBytes)
            payload.bytes.copyMemory(from: blocks.bytes, byteCount: payload.count)
            return payload
        case .file: break
        }
        do {
            let reader = try KVSnapshotFile.Reader(path: path)
            defer { reader.close() }
            guard reader.header.model == model, reader.header.layout == layout, match.blocks <= reader.header.blockChecksums.count,
                reader.header.tokens[0..<count] == tokens[0..<count]
            else {
                throw KVSnapshotFileError(path: path, message: "holds other tokens, model or layout than its index entry")
            }
            let payload = KVSnapshotPayload(byteCount: match.blocks * layout.blockBytes)
            try reader.readBlocks(match.blocks, to: payload.bytes)
            let now = Date()
            lock.withLock { entries[match.file]?.lastUsed = now.timeIntervalSince1970 }
            try? FileManager.default.setAttributes([.modificationDate: now], ofItemAtPath: path)
            return payload
        } catch let error as KVSnapshotFileError where error.missing {
            lock.withLock { _ = entries.removeValue(forKey: match.file) }
            return nil
        } catch {
            queue.async { [self] in
                lock.withLock {
                    if entries.removeValue(forKey: match.file) != nil { stats.damaged += 1 }
                }
                unlink(path)
            }
            return nil
        }
    }

    // MARK: - Save and delete

    /// Saves `payload` (blocks in pool layout for `tokens`, whole blocks) in the background. A
    /// conversation keeps one snapshot: its newest chain replaces the older ones (requests outside
    /// a conversation replace only chains the new one extends). The least recently used snapshots
    /// make room within the budget; a chain larger than the whole budget is not saved.
    public func save(owner: KVSnapshotOwner, tokens: [Int], payload: KVSnapshotPayload) {
        let blockBytes = layout.blockBytes
        precondition(tokens.count % layout.blockSize == 0 && payload.count == tokens.count / layout.blockSize * blockBytes)
        // Indexed at once (loads read the payload until the file is written); the header's size is
        // estimated until then: tokens as JSON numbers and a checksum per block.
        let name = UUID().uuidString.lowercased() + ".kvs"
        let estimate = payload.count + tokens.count * 8 + tokens.count / layout.blockSize * 21 + 512
        let dropped: [String]? = lock.withLock {
            guard !deleted.contains(owner), estimate <= budgetBytes else { return nil }
            let old = entries.filter { _, e in
                e.owner == owner && (!owner.conversation.isEmpty || tokens.starts(with: e.tokens))
            }.map(\.key)
            for name in old { entries[name] = nil }
            let evicted = evictLocked(toFit: estimate)
            entries[name] = Entry(owner: owner, tokens: tokens, bytes: estimate, lastUsed: Date().timeIntervalSince1970, writing: payload)
            return old + evicted
        }
        guard let dropped else { return }
        queue.async { [self] in
            for old in dropped { unlink((directory as NSString).appendingPathComponent(old)) }
            let blocks = UnsafeRawBufferPointer(start: payload.bytes, count: payload.count)
            let header = KVSnapshotHeader(
                model: model, layout: layout, user: owner.user, conversation: owner.conversation, tokens: tokens,
                blockChecksums: KVSnapshotFile.blockChecksums(blocks, blockBytes: blockBytes))
            let path = (directory as NSString).appendingPathComponent(name)
            do {
                guard lock.withLock({ entries[name] != nil }) else { return }  // evicted or deleted meanwhile
                let head = try KVSnapshotFile.head(header)
                try KVSnapshotFile.write(path: path, head: head, blocks: blocks)
                let kept: Bool = lock.withLock {
                    guard entries[name] != nil else { return false }
                    entries[name]?.writing = nil
                    entries[name]?.bytes = head.count + payload.count
                    stats.writes += 1
                    return true
                }
                if !kept { unlink(path) }
            } catch {
                lock.withLock { _ = entries.removeValue(forKey: name) }
                unlink(path)
            }
        }
    }

    /// Deletes the conversation's snapshots, and keeps its chains still in memory from being saved.
    /// Returns when the files are gone (after any write already queued).
    public func remove(owner: KVSnapshotOwner) {
        queue.sync {
            let names: [String] = lock.withLock {
                deleted.insert(owner)
                let names = entries.filter { $0.value.owner == owner }.map(\.key)
                for name in names { entries[name] = nil }
                return names
            }
            for name in names { unlink((directory as NSString).appendingPathComponent(name)) }
        }
    }

    /// Returns when every save queued so far is on disk.
    public func waitForWrites() { queue.sync {} }

    /// Drops least recently used entries until `extra` more bytes fit the budget; returns their
    /// file names (the caller deletes the files). Under `lock`.
    private func evictLocked(toFit extra: Int) -> [String] {
        var total = entries.values.reduce(0) { $0 + $1.bytes }
        guard total + extra > budgetBytes else { return [] }
        var names: [String] = []
        for (name, entry) in entries.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) {
            guard total + extra > budgetBytes else { break }
            entries[name] = nil
            names.append(name)
            total -= entry.bytes
            stats.evictions += 1
        }
        return names
    }
}
