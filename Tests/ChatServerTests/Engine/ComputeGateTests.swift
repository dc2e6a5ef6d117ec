import Foundation
import XCTest

@testable import ChatServer

/// Two engine threads through one gate: their steps never overlap, and while both want the cores
/// they take turns.
final class ComputeGateTests: XCTestCase {
    func testStepsNeverOverlapAndAlternateWhenBothAreBusy() {
        let gate = ComputeGate()
        final class Record: @unchecked Sendable {
            let lock = NSLock()
            var inside = 0
            var overlaps = 0
            var order: [Int] = []
        }
        let record = Record()
        let group = DispatchGroup()
        for engine in 0..<2 {
            group.enter()
            Thread {
                for _ in 0..<200 {
                    gate.run {
                        record.lock.withLock {
                            record.inside += 1
                            if record.inside > 1 { record.overlaps += 1 }
                            record.order.append(engine)
                        }
                        usleep(200)
                        record.lock.withLock { record.inside -= 1 }
                    }
                }
                group.leave()
            }.start()
        }
        group.wait()
        let (overlaps, order) = (record.overlaps, record.order)
        XCTAssertEqual(overlaps, 0)
        XCTAssertEqual(order.count, 400)
        // From the later thread's first step until the first thread is done, turns alternate.
        let later = order[0] == 0 ? 1 : 0
        let from = order.firstIndex(of: later)!
        let end = min(order.lastIndex(of: 0)!, order.lastIndex(of: 1)!)
        var longest = 1
        var run = 1
        for i in (from + 1)..<end {
            run = order[i] == order[i - 1] ? run + 1 : 1
            longest = max(longest, run)
        }
        XCTAssertLessThanOrEqual(longest, 2, "steps of one engine in a row while both were busy")
    }

    func testOthersStreaming() {
        let gate = ComputeGate()
        let light = NSObject()
        let heavy = NSObject()
        XCTAssertFalse(gate.othersStreaming(than: heavy))
        gate.noteStreaming(light, true)
        XCTAssertTrue(gate.othersStreaming(than: heavy))
        XCTAssertFalse(gate.othersStreaming(than: light), "its own streams do not count")
        gate.noteStreaming(heavy, true)
        gate.noteStreaming(light, false)
        XCTAssertFalse(gate.othersStreaming(than: heavy))
        XCTAssertTrue(gate.othersStreaming(than: light))
    }
}
