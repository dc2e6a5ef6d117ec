import Foundation

/// Lets the engines of several models share the machine's cores: each engine's step runs inside
/// `run`, one step at a time, in arrival order. Each model's pool has a thread per core, so two
/// steps at once would put two threads on every core (and their spin-waits against each other);
/// in turn, each step gets every core, and two busy engines alternate step by step. Each engine's
/// planner then sees the other's steps in its intervals and plans shorter steps (`StepMargin`), and
/// an engine whose steps are prompt tokens only keeps them within half the inter-token target while
/// another engine has replies streaming (`othersStreaming`), or its long prefill steps would stall them.
public final class ComputeGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0
    private var streaming = Set<ObjectIdentifier>()

    /// Whether `engine` has replies streaming (decode rows in its steps).
    public func noteStreaming(_ engine: AnyObject, _ isStreaming: Bool) {
        condition.lock()
        if isStreaming { streaming.insert(ObjectIdentifier(engine)) } else { streaming.remove(ObjectIdentifier(engine)) }
        condition.unlock()
    }

    /// Whether an engine other than `engine` has replies streaming.
    public func othersStreaming(than engine: AnyObject) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return streaming.contains { $0 != ObjectIdentifier(engine) }
    }

    public init() {}

    public func run<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        while serving != ticket { condition.wait() }
        condition.unlock()
        defer {
            condition.lock()
            serving += 1
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }
}
