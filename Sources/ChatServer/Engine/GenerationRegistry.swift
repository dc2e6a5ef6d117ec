import Foundation

/// The replies being generated: one reply at a time per conversation, stop requests, and the
/// shutdown drain. How many replies run or wait is the engine's to bound (its queue limit, answered
/// with `ChatEngineError.busy` and so 429): one admission limit, counted in the engine's metrics.
public actor GenerationRegistry {
    public struct Ticket: Sendable, Hashable {
        let id: UInt64
    }

    private struct Entry {
        var userId: Int64
        var conversationId: String?
        var cancel: (@Sendable () -> Void)?
        var cancelRequested = false
        /// Cancelled through `stop` (the user's stop), not by the shutdown.
        var stoppedByUser = false
    }

    private var entries: [UInt64: Entry] = [:]
    private var nextId: UInt64 = 0
    public private(set) var draining = false

    public init() {}

    public var runningCount: Int { entries.count }

    /// Registers a generation, or throws the API error that explains why not (shutting down, or a
    /// reply already running in the conversation).
    public func admit(userId: Int64, conversationId: String? = nil) throws -> Ticket {
        if draining { throw APIError.shuttingDown }
        if let conversationId, entries.values.contains(where: { $0.conversationId == conversationId }) {
            throw APIError.conflict("A reply is already being generated in this conversation; stop it first.")
        }
        nextId += 1
        entries[nextId] = Entry(userId: userId, conversationId: conversationId)
        return Ticket(id: nextId)
    }

    /// Registers how to cancel the ticket's generation (runs it at once if a stop came first).
    public func attach(_ ticket: Ticket, cancel: @escaping @Sendable () -> Void) {
        guard var entry = entries[ticket.id] else { cancel(); return }
        if entry.cancelRequested { cancel() }
        entry.cancel = cancel
        entries[ticket.id] = entry
    }

    public func finish(_ ticket: Ticket) {
        entries[ticket.id] = nil
    }

    /// Stops the reply running in a conversation; false when none runs.
    public func stop(conversationId: String) -> Bool {
        guard let found = entries.first(where: { $0.value.conversationId == conversationId }) else { return false }
        entries[found.key]?.cancelRequested = true
        entries[found.key]?.stoppedByUser = true
        found.value.cancel?()
        return true
    }

    /// Whether the ticket's generation was stopped by `stop` (a reply then ends as `stopped`).
    public func wasStopped(_ ticket: Ticket) -> Bool {
        entries[ticket.id]?.stoppedByUser ?? false
    }

    public func isRunning(conversationId: String) -> Bool {
        entries.values.contains { $0.conversationId == conversationId }
    }

    private func cancelAll() {
        for (id, entry) in entries {
            entries[id]?.cancelRequested = true
            entry.cancel?()
        }
    }

    /// Shutdown: refuse new work, let running replies finish for up to `timeout`, then cancel the
    /// rest (they are stored as interrupted) and wait up to `cancelGrace` for them to be stored.
    /// Returns how many replies had to be cancelled.
    public func drain(timeout: Duration, cancelGrace: Duration = .seconds(5)) async -> Int {
        draining = true
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !entries.isEmpty && clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let cancelled = entries.count
        cancelAll()
        let graceEnd = clock.now + cancelGrace
        while !entries.isEmpty && clock.now < graceEnd {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return cancelled
    }
}
