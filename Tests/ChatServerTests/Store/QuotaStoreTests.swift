import ChatServer
import Foundation
import XCTest

/// The store's quota records on both engines: a user's own limits, and usage counters that two
/// instances (two connections to one database) add to at once without losing a count.
enum QuotaStoreSuite {
    static func countersAddUpAcrossInstances(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let location = try engine.freshLocation(test)
        let one = try await StoreSuite.open(location)
        let two = try await StoreSuite.open(location)
        let user = try await one.createUser(name: "quota-user", isAdmin: false)
        let other = try await one.createUser(name: "someone-else", isAdmin: false)

        let none = try await two.quotaOverrides(userId: user.userId)
        XCTAssertEqual(none, QuotaLimits())
        try await one.setQuotaOverrides(userId: user.userId, QuotaLimits(requestsPerMinute: 3, tokensPerDay: 0))
        let set = try await two.quotaOverrides(userId: user.userId)
        XCTAssertEqual(set, QuotaLimits(requestsPerMinute: 3, tokensPerDay: 0))
        try await two.setQuotaOverrides(userId: user.userId, QuotaLimits(requestsPerMinute: nil, tokensPerDay: 500))
        let replaced = try await one.quotaOverrides(userId: user.userId)
        XCTAssertEqual(replaced, QuotaLimits(requestsPerMinute: nil, tokensPerDay: 500))
        do {
            try await one.setQuotaOverrides(userId: other.userId, QuotaLimits(requestsPerMinute: -1))
            XCTFail("a negative limit is refused by the schema")
        } catch {}

        // 2 × 40 increments at once from two instances: every one counted, totals strictly increasing per instance.
        let totals = try await withThrowingTaskGroup(of: [Int].self) { group in
            for store in [one, two] {
                group.addTask {
                    var seen: [Int] = []
                    for _ in 0..<40 { seen.append(try await store.addUsage(userId: user.userId, kind: "requests", window: 100, amount: 1)) }
                    return seen
                }
            }
            return try await group.reduce(into: [[Int]]()) { $0.append($1) }
        }
        for seen in totals { XCTAssertEqual(seen, seen.sorted(), "a counter never goes back") }
        XCTAssertEqual(Set(totals.flatMap { $0 }).count, 80, "each increment saw its own total: \(totals)")
        let total = try await one.usage(userId: user.userId, kind: "requests", window: 100)
        XCTAssertEqual(total, 80)
        let otherKind = try await one.usage(userId: user.userId, kind: "tokens", window: 100)
        XCTAssertEqual(otherKind, 0)
        let otherUser = try await one.usage(userId: other.userId, kind: "requests", window: 100)
        XCTAssertEqual(otherUser, 0)
        let added = try await two.addUsage(userId: user.userId, kind: "tokens", window: 100, amount: 250)
        XCTAssertEqual(added, 250)

        // A new window starts from zero and drops the older windows of its kind only.
        let next = try await one.addUsage(userId: user.userId, kind: "requests", window: 101, amount: 1)
        XCTAssertEqual(next, 1)
        let old = try await one.usage(userId: user.userId, kind: "requests", window: 100)
        XCTAssertEqual(old, 0)
        let tokensKept = try await one.usage(userId: user.userId, kind: "tokens", window: 100)
        XCTAssertEqual(tokensKept, 250)
        try await one.close()
        try await two.close()
    }
}

final class SQLiteQuotaStoreTests: XCTestCase {
    func testCountersAddUpAcrossInstances() async throws { try await QuotaStoreSuite.countersAddUpAcrossInstances(.sqlite, self) }
}

final class PostgresQuotaStoreTests: XCTestCase {
    func testCountersAddUpAcrossInstances() async throws { try await QuotaStoreSuite.countersAddUpAcrossInstances(.postgres, self) }
}
