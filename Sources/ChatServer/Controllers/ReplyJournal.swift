import Foundation
import Logging

/// A streamed reply on its way to the store. Its row is inserted as `interrupted` before the
/// generation starts; `append` collects the text as it is sent; a flusher task writes the text to
/// the row every `interval` while it grows; `finish` stops the flusher and writes the final status.
/// A process killed mid-reply so leaves the row `interrupted` with the text of the last flush, at
/// most `interval` (plus one write) behind what the client saw.
final class ReplyJournal: @unchecked Sendable {
    private let lock = NSLock()
    private var reply: StoredMessage
    private var dirty = false
    private var flusher: Task<Void, Never>?
    private let store: any ChatStore
    private let logger: Logger

    init(reply: StoredMessage, store: any ChatStore, logger: Logger) {
        precondition(reply.id != nil, "the reply's row is inserted before it is journalled")
        self.reply = reply
        self.store = store
        self.logger = logger
    }

    /// Starts writing the text every `interval` while it changes.
    func startFlushing(every interval: Duration) {
        let task = Task { [self] in
            let clock = ContinuousClock()
            var next = clock.now + interval
            while !Task.isCancelled {
                do { try await Task.sleep(until: next, clock: clock) } catch { return }
                next = clock.now + interval
                await flush()
            }
        }
        lock.withLock { flusher = task }
    }

    func promptProcessed(tokens: Int) {
        lock.withLock {
            reply.promptTokens = tokens
            dirty = true
        }
    }

    func append(_ text: String) {
        lock.withLock {
            reply.content += text
            dirty = true
        }
    }

    /// Writes the text so far when it changed since the last write. A failed write is logged and
    /// retried at the next tick (the reply stays `interrupted` in the store meanwhile).
    func flush() async {
        guard let snapshot = lock.withLock({ () -> StoredMessage? in
            defer { dirty = false }
            return dirty ? reply : nil
        }) else { return }
        do {
            _ = try await store.updateMessage(snapshot)
        } catch {
            lock.withLock { dirty = true }
            logger.warning("could not flush the reply", metadata: ["message": "\(snapshot.id ?? 0)", "error": "\(error)"])
        }
    }

    /// Stops the flusher and writes `final` (same row). A reply that ended without text and
    /// without an error (stopped or interrupted before its first token) is deleted instead: nil.
    func finish(_ final: StoredMessage) async throws -> StoredMessage? {
        let task = lock.withLock { () -> Task<Void, Never>? in
            defer { flusher = nil }
            return flusher
        }
        task?.cancel()
        await task?.value
        var final = final
        final.id = reply.id
        if final.content.isEmpty && (final.status == .interrupted || final.status == .stopped) {
            if let id = final.id { try await store.deleteMessage(id: id) }
            return nil
        }
        guard try await store.updateMessage(final) else { return nil }  // the conversation was deleted meanwhile
        return final
    }
}
