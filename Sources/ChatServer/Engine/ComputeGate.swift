import Foundation

/// Lets the engines of several models share the machine's cores: each engine's step runs inside
/// `run`, one step at a time, in arrival order. Each model's pool has a thread per core, so two
/// steps at once would put two threads on every core (and their spin-waits against each other);
/// in turn, each step gets every core, and two busy engines alternate step by step. Each engine's
/// planner then sees the other's steps in its intervals and plans shorter steps (`StepMargin`).
public final class ComputeGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0

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
