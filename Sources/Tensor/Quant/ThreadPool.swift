import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Persistent worker threads for kernels: created once, woken per call.
///
/// Why not GCD: `DispatchQueue.concurrentPerform` wakes its workers too late for the 50-300 µs
/// matrix-vector calls of decoding (about 1-thread speed: docs/kernels.md). Here each call
/// bumps an atomic generation counter; workers spin on it for a short while (~tens of µs,
/// `spinIterations`) and only then sleep on a condition variable, so back-to-back calls of one
/// forward pass find them awake. The calling thread does chunk 0 itself.
///
/// `parallelFor` calls from different threads are serialized (one job at a time); calling it from
/// inside a body deadlocks (precondition-checked for the calling thread).
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int
    private let state: PoolState

    /// Spin iterations (each an atomic load, a few ns) before a waiting thread sleeps or yields:
    /// about 20-50 µs, longer than the gaps between kernel calls in one forward pass.
    static let spinIterations = 20000

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.threads = max(1, threads)
        state = PoolState(threads: self.threads)
        for index in 1..<self.threads {
            // Workers hold the state, not the pool: the pool's deinit stops them.
            let thread = Thread { [state] in state.workerLoop(index: index) }
            thread.name = "sarvam.pool.\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit { state.stop() }

    /// The part of 0..<count that `thread` handles: `threads` contiguous chunks whose boundaries are
    /// multiples of `alignment` (the first `units % threads` chunks get one unit more).
    public static func chunk(_ count: Int, alignment: Int, threads: Int, thread: Int) -> Range<Int> {
        let units = (count + alignment - 1) / alignment
        let base = units / threads, extra = units % threads
        let startUnit = thread * base + min(thread, extra)
        let endUnit = startUnit + base + (thread < extra ? 1 : 0)
        return min(count, startUnit * alignment)..<min(count, endUnit * alignment)
    }

    /// Calls `body(thread, range)` for each non-empty chunk of a split of 0..<count into `threads`
    /// contiguous chunks aligned to `alignment`, in parallel; returns when all are done.
    public func parallelFor(_ count: Int, alignment: Int = 1, _ body: (_ thread: Int, _ range: Range<Int>) -> Void) {
        precondition(alignment >= 1)
        guard count > 0 else { return }
        if threads == 1 || count <= alignment {
            body(0, 0..<count)
            return
        }
        state.run(count, alignment: alignment, grain: 0, body)
    }

    /// Like `parallelFor`, but the threads CLAIM successive chunks of `grain` indices (the last may
    /// be shorter) through an atomic counter until none are left, so `body` runs many times per
    /// thread. On a shared machine a thread that is descheduled simply claims fewer chunks instead
    /// of holding up the call (a static split waits for its slowest thread). `thread` is still
    /// unique among concurrently running bodies. With one thread, or count ≤ grain, `body` runs
    /// once over 0..<count.
    public func dynamicFor(_ count: Int, grain: Int, _ body: (_ thread: Int, _ range: Range<Int>) -> Void) {
        precondition(grain >= 1)
        guard count > 0 else { return }
        if threads == 1 || count <= grain {
            body(0, 0..<count)
            return
        }
        state.run(count, alignment: 1, grain: grain, body)
    }
}

/// The state workers share with the caller (workers keep it alive until they exit).
private final class PoolState: @unchecked Sendable {
    let threads: Int
    /// Incremented once per job (and once more at shutdown); workers wait for it to change.
    let generation = Atomic<Int>(0)
    /// Workers that have not finished the current job yet.
    let remaining = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let running = Atomic<Bool>(false)

    // The current job, written before `generation` is bumped (release), read after it is seen
    // (acquire), cleared only after every worker has reported.
    nonisolated(unsafe) var jobBody: UnsafeRawPointer? = nil
    nonisolated(unsafe) var jobCount = 0
    nonisolated(unsafe) var jobAlignment = 1
    /// 0: static split; > 0: chunks of this size claimed through `nextChunk`.
    nonisolated(unsafe) var jobGrain = 0
    let nextChunk = Atomic<Int>(0)

    let sleepLock: UnsafeMutablePointer<pthread_mutex_t>
    let wakeCondition: UnsafeMutablePointer<pthread_cond_t>
    let callLock: UnsafeMutablePointer<pthread_mutex_t>

    init(threads: Int) {
        self.threads = threads
        sleepLock = .allocate(capacity: 1)
        wakeCondition = .allocate(capacity: 1)
        callLock = .allocate(capacity: 1)
        pthread_mutex_init(sleepLock, nil)
        pthread_cond_init(wakeCondition, nil)
        pthread_mutex_init(callLock, nil)
    }

    deinit {
        pthread_mutex_destroy(sleepLock)
        pthread_cond_destroy(wakeCondition)
        pthread_mutex_destroy(callLock)
        sleepLock.deallocate()
        wakeCondition.deallocate()
        callLock.deallocate()
    }

    func wakeAll() {
        pthread_mutex_lock(sleepLock)
        pthread_cond_broadcast(wakeCondition)
        pthread_mutex_unlock(sleepLock)
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        generation.add(1, ordering: .releasing)
        wakeAll()
    }

    /// The calling thread's or a worker's share of the current job.
    @inline(__always)
    func work(thread: Int, count: Int, alignment: Int, grain: Int, _ body: (_ thread: Int, _ range: Range<Int>) -> Void) {
        if grain == 0 {
            let range = ThreadPool.chunk(count, alignment: alignment, threads: threads, thread: thread)
            if !range.isEmpty { body(thread, range) }
            return
        }
        while true {
            let start = nextChunk.wrappingAdd(grain, ordering: .relaxed).oldValue
            if start >= count { return }
            body(thread, start..<min(count, start + grain))
        }
    }

    func run(_ count: Int, alignment: Int, grain: Int, _ body: (_ thread: Int, _ range: Range<Int>) -> Void) {
        pthread_mutex_lock(callLock)
        precondition(!running.load(ordering: .relaxed), "ThreadPool.parallelFor called from inside a parallelFor body")
        running.store(true, ordering: .relaxed)
        withoutActuallyEscaping(body) { escapable in
            withUnsafePointer(to: escapable) { bodyPointer in
                jobBody = UnsafeRawPointer(bodyPointer)
                jobCount = count
                jobAlignment = alignment
                jobGrain = grain
                nextChunk.store(0, ordering: .relaxed)
                remaining.store(threads - 1, ordering: .relaxed)
                generation.add(1, ordering: .releasing)
                wakeAll()

                work(thread: 0, count: count, alignment: alignment, grain: grain, escapable)

                var spins = 0
                while remaining.load(ordering: .acquiring) > 0 {
                    spins += 1
                    if spins < ThreadPool.spinIterations { spinPause() } else { sched_yield() }
                }
                jobBody = nil
            }
        }
        running.store(false, ordering: .relaxed)
        pthread_mutex_unlock(callLock)
    }

    func workerLoop(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                spins += 1
                if spins < ThreadPool.spinIterations {
                    spinPause()
                } else {
                    pthread_mutex_lock(sleepLock)
                    while generation.load(ordering: .acquiring) == seen {
                        pthread_cond_wait(wakeCondition, sleepLock)
                    }
                    pthread_mutex_unlock(sleepLock)
                    spins = 0
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if stopping.load(ordering: .acquiring) { return }
            if let pointer = jobBody {
                let body = pointer.assumingMemoryBound(to: ((Int, Range<Int>) -> Void).self).pointee
                work(thread: index, count: jobCount, alignment: jobAlignment, grain: jobGrain, body)
            }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}

/// One spin-wait step. (`_mm_pause` is a clang builtin without a body that Swift can call, so the
/// loop spins on the atomic load alone; the spin is short and bounded.)
@inline(__always)
func spinPause() {}
