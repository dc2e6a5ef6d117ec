import XCTest
import Tensor
import Synchronization

final class ThreadPoolTests: XCTestCase {
    /// Every index of 0..<count is visited exactly once, by chunks aligned as asked, over many
    /// calls in a row (workers are reused, not recreated).
    func testCoversEveryIndexExactlyOnce() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            XCTAssertEqual(pool.threads, threads)
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: 5000)
            defer { counts.deallocate() }
            for call in 0..<2000 {
                let count = [1, 2, 3, 7, 64, 896, 4864, 5000][call % 8]
                let alignment = [1, 2, 4, 16][call % 4]
                counts.initialize(repeating: 0, count: count)
                let badAlignment = Atomic<Int>(0)
                pool.parallelFor(count, alignment: alignment) { _, range in
                    if range.lowerBound % alignment != 0 { badAlignment.add(1, ordering: .relaxed) }
                    for i in range { counts[i] += 1 }
                }
                XCTAssertEqual(badAlignment.load(ordering: .relaxed), 0, "call \(call): chunk not aligned to \(alignment)")
                for i in 0..<count where counts[i] != 1 {
                    XCTFail("threads \(threads) call \(call) count \(count): index \(i) visited \(counts[i]) times")
                    break
                }
            }
        }
    }

    /// dynamicFor: chunks claimed through an atomic counter still cover every index exactly once,
    /// never overlap, and respect the grain (one body call over everything with one thread), over
    /// many calls in a row.
    func testDynamicForCoversEveryIndexExactlyOnce() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: 5000)
            defer { counts.deallocate() }
            for call in 0..<2000 {
                let count = [1, 2, 3, 7, 64, 896, 4864, 5000][call % 8]
                let grain = [1, 8, 16, 100][call % 4]
                counts.initialize(repeating: 0, count: count)
                let badChunk = Atomic<Int>(0)
                pool.dynamicFor(count, grain: grain) { _, range in
                    if range.count > grain && threads > 1 { badChunk.add(1, ordering: .relaxed) }
                    for i in range { counts[i] += 1 }
                }
                XCTAssertEqual(badChunk.load(ordering: .relaxed), 0, "call \(call): chunk larger than grain \(grain)")
                for i in 0..<count where counts[i] != 1 {
                    XCTFail("threads \(threads) call \(call) count \(count): index \(i) visited \(counts[i]) times")
                    break
                }
            }
        }
    }

    func testUsesAllThreadsOnLargeWork() {
        let pool = ThreadPool(threads: 2)
        let seen = Atomic<Int>(0)
        pool.parallelFor(1000) { thread, _ in seen.bitwiseOr(1 << thread, ordering: .relaxed) }
        XCTAssertEqual(seen.load(ordering: .relaxed), 0b11)
    }

    func testChunksAreContiguousAndBalanced() {
        for (count, alignment, threads) in [(10, 1, 3), (896, 4, 2), (33, 4, 2), (5, 8, 2)] {
            var next = 0
            for t in 0..<threads {
                let r = ThreadPool.chunk(count, alignment: alignment, threads: threads, thread: t)
                XCTAssertEqual(r.lowerBound, next, "\(count) \(alignment) \(threads) thread \(t)")
                next = r.upperBound
            }
            XCTAssertEqual(next, count)
        }
    }

    func testPoolsCanBeCreatedAndDropped() {
        for _ in 0..<20 {
            let pool = ThreadPool(threads: 2)
            let total = Atomic<Int>(0)
            pool.parallelFor(100) { _, r in total.add(r.count, ordering: .relaxed) }
            XCTAssertEqual(total.load(ordering: .relaxed), 100)
        }
    }
}
