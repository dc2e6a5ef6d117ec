import XCTest
import Tensor
import TestSupport

final class TensorStorageTests: XCTestCase {
    func testShapesStridesAndValues() {
        let t = Tensor(shape: [2, 3, 4], values: (0..<24).map(Float.init))
        XCTAssertEqual(t.shape, [2, 3, 4])
        XCTAssertEqual(t.strides, [12, 4, 1])
        XCTAssertEqual(t.count, 24)
        XCTAssertEqual(t[1, 2, 3], 23)
        XCTAssertEqual(t.array, (0..<24).map(Float.init))
        let z = Tensor(zeros: [5, 7])
        XCTAssertEqual(z.array, [Float](repeating: 0, count: 35))
        XCTAssertEqual(Int(bitPattern: z.pointer) % 64, 0, "owned storage is cache-line aligned")
        XCTAssertEqual(Tensor(zeros: []).count, 1)
        XCTAssertEqual(Tensor(zeros: [0, 3]).count, 0)
    }

    func testRowViewsShareStorage() {
        let t = Tensor(shape: [4, 3], values: (0..<12).map(Float.init))
        let middle = t.rows(1..<3)
        XCTAssertEqual(middle.shape, [2, 3])
        XCTAssertEqual(middle.array, [3, 4, 5, 6, 7, 8])
        XCTAssertEqual(middle.pointer, t.pointer + 3)
        let r = t.row(2)
        XCTAssertEqual(r.shape, [3])
        XCTAssertEqual(r.array, [6, 7, 8])
        // A write through a view is visible in the original: no copy was made.
        middle.row(1).pointer[2] = 100
        XCTAssertEqual(t[2, 2], 100)
        XCTAssertEqual(t.rows(0..<0).count, 0)
        let nested = t.rows(1..<4).rows(1..<2)
        XCTAssertEqual(nested.array, [6, 7, 100])
        XCTAssertEqual(t.reshaped([2, 6]).row(1).array, [6, 7, 100, 9, 10, 11])
    }

    func testCopyIsIndependent() {
        let t = Tensor(shape: [2, 2], values: [1, 2, 3, 4])
        let c = t.row(1).copy()
        t.pointer[2] = 30
        XCTAssertEqual(c.array, [3, 4])
        XCTAssertTrue(c.storage.isOwned)
    }

    final class Owner {
        let buffer: UnsafeMutablePointer<Float>
        init(_ n: Int) { buffer = .allocate(capacity: n); buffer.initialize(repeating: 7, count: n) }
        deinit { buffer.deallocate() }
    }

    func testBorrowedStorageKeepsOwnerAliveWithoutCopy() {
        weak var weakOwner: Owner?
        var view: Tensor?
        do {
            let owner = Owner(6)
            weakOwner = owner
            let t = Tensor(borrowing: owner.buffer, shape: [2, 3], owner: owner)
            XCTAssertEqual(t.pointer, owner.buffer, "borrowing must not copy")
            XCTAssertFalse(t.storage.isOwned)
            view = t.row(1)
        }
        XCTAssertNotNil(weakOwner, "a view of borrowed memory keeps its owner alive")
        XCTAssertEqual(view?.array, [7, 7, 7])
        view = nil
        XCTAssertNil(weakOwner, "the owner is released with the last view")
    }
}
