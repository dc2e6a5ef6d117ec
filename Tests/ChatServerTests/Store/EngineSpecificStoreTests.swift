import Foundation
import GRDB
import PostgresNIO
import XCTest

@testable import ChatServer

/// What only SQLite has: WAL, foreign keys per connection, and databases from before a migration.
final class SQLiteDatabaseTests: XCTestCase {
    func testFileDatabaseIsWALWithForeignKeys() async throws {
        guard case .sqlite(let path) = try StoreEngine.sqlite.freshLocation(self) else { return XCTFail("not SQLite") }
        let database = try ChatDatabase(path: path)
        defer { try? database.close() }
        let journalMode = try await database.writer.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        XCTAssertEqual(journalMode, "wal")
        let foreignKeys = try await database.writer.read { db in try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") }
        XCTAssertEqual(foreignKeys, true)
        let tables = try await database.writer.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%' ORDER BY name")
        }
        XCTAssertEqual(tables, ["api_keys", "conversations", "jobs", "messages", "sessions", "usage_counters", "user_quotas", "users"])
    }

    /// A database written before `messageStatusStopped` keeps its messages, index and constraints
    /// through the table rebuild, and accepts the new status afterwards.
    func testMessageStatusMigrationKeepsOldMessages() async throws {
        guard case .sqlite(let path) = try StoreEngine.sqlite.freshLocation(self) else { return XCTFail("not SQLite") }
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        let old = try DatabaseQueue(path: path)
        try ChatDatabase.migrator.migrate(old, upTo: "createMessages")
        try await old.write { db in
            try db.execute(sql: "INSERT INTO users (name, isAdmin, createdAt) VALUES ('u', 0, '2026-01-01 00:00:00.000')")
            try db.execute(
                sql: """
                    INSERT INTO conversations (id, userId, title, model, settings, createdAt, updatedAt)
                    VALUES ('c', 1, 't', 'm', '{}', '2026-01-01 00:00:00.000', '2026-01-01 00:00:00.000')
                    """)
            try db.execute(
                sql: """
                    INSERT INTO messages (conversationId, role, content, status, tokenCount, createdAt)
                    VALUES ('c', 'user', 'old question', 'complete', 4, '2026-01-01 00:00:00.000'),
                           ('c', 'assistant', 'old partial', 'interrupted', NULL, '2026-01-01 00:00:01.000')
                    """)
            do {
                try db.execute(
                    sql: "INSERT INTO messages (conversationId, role, content, status, createdAt) VALUES ('c', 'user', 'x', 'stopped', '2026')")
                XCTFail("the old schema refused 'stopped'")
            } catch {}
        }
        try old.close()

        let database = try ChatDatabase(path: path)
        defer { try? database.close() }
        let store = GRDBChatStore(database: database)
        let messages = try await store.messages(conversationId: "c")
        XCTAssertEqual(messages.map(\.content), ["old question", "old partial"])
        XCTAssertEqual(messages.map(\.status), [.complete, .interrupted])
        XCTAssertEqual(messages.first?.tokenCount, 4)
        _ = try await store.appendMessage(StoredMessage(conversationId: "c", role: .assistant, content: "s", status: .stopped))
        let indexes = try await database.writer.read { db in try db.indexes(on: "messages").map(\.columns) }
        XCTAssertTrue(indexes.contains(["conversationId"]), "\(indexes)")
        let violations = try await database.writer.read { db in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") }
        XCTAssertEqual(violations.count, 0)
        let deleted = try await store.deleteConversation(id: "c", userId: 1)
        XCTAssertTrue(deleted)
        let left = try await store.messages(conversationId: "c")
        XCTAssertEqual(left.count, 0, "the rebuilt table still cascades")
    }
}

/// What only PostgreSQL has: several instances migrating at once, and schema versions.
final class PostgresDatabaseTests: XCTestCase {
    func testInstancesStartingTogetherMigrateOnce() async throws {
        let location = try StoreEngine.postgres.freshLocation(self)
        let stores = try await withThrowingTaskGroup(of: (any ChatStore).self) { group in
            for _ in 0..<4 { group.addTask { try await StoreSuite.open(location) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        for store in stores {
            let applied = try await store.appliedMigrations()
            XCTAssertEqual(applied, StoreEngine.postgres.expectedMigrations)
        }
        let versions = try await rows(stores[0], "SELECT version::text FROM sarvam_schema_migrations ORDER BY version")
        XCTAssertEqual(versions, ["1", "2", "3", "4", "5"])
        // And their admins: the first start creates one, the others see it.
        let created = try await withThrowingTaskGroup(of: Bool.self) { group in
            for store in stores { group.addTask { try await Accounts(store: store).bootstrapAdmin(presetKey: nil) != nil } }
            return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
        }
        XCTAssertEqual(created, 1)
        for store in stores { try await store.close() }
    }

    func testNewerSchemaIsRefused() async throws {
        let location = try StoreEngine.postgres.freshLocation(self)
        let store = try await StoreSuite.open(location)
        try await StoreEngine.postgres.execute(store, "INSERT INTO sarvam_schema_migrations (version, name) VALUES (99, 'future')")
        try await store.close()
        do {
            _ = try await StoreSuite.open(location)
            XCTFail("a schema from a newer Sarvam was used")
        } catch {
            XCTAssertTrue("\(error)".contains("version 99"), "\(error)")
        }
    }

    func testUnreachableDatabaseIsAClearError() async throws {
        // A port nobody listens on (bound and closed at once).
        let url = try PostgresURL(parsing: "postgres://sarvam@127.0.0.1:\(try freeTCPPort())/none")
        let clock = ContinuousClock()
        let start = clock.now
        do {
            _ = try await PostgresChatStore.open(url, logger: quietLogger(), connectTimeout: .seconds(2))
            XCTFail("opened a store on a closed port")
        } catch let error as StoreUnavailableError {
            XCTAssertTrue("\(error)".contains("127.0.0.1"), "\(error)")
        }
        XCTAssertLessThan(clock.now - start, .seconds(4))
    }

    func rows(_ store: any ChatStore, _ sql: String) async throws -> [String] {
        var result: [String] = []
        for try await line in try await (store as! PostgresChatStore).client.query(PostgresQuery(unsafeSQL: sql)).decode(String.self) {
            result.append(line)
        }
        return result
    }
}

/// A loopback TCP port that was free a moment ago.
func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
