import Foundation
import GRDB

/// Owns the SQLite connection(s) and the schema. A file database is a `DatabasePool` (WAL: readers
/// never wait for the writer, and `sarvam users/keys` can write while the server runs); tests use an
/// in-memory `DatabaseQueue`. Migrations are named and never edited once shipped: add new ones.
public final class ChatDatabase: Sendable {
    public let writer: any DatabaseWriter
    public let path: String?

    /// Opens (creating if needed) the database at `path` and migrates it.
    public init(path: String) throws {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        do {
            writer = try DatabasePool(path: path, configuration: Self.configuration())
        } catch {
            throw StoreError("cannot open the database at \(path): \(error)")
        }
        self.path = path
        try migrate()
    }

    /// A private in-memory database (tests).
    public init(inMemory: Void = ()) throws {
        writer = try DatabaseQueue(configuration: Self.configuration())
        path = nil
        try migrate()
    }

    /// The default file under a data directory.
    public static func defaultPath(dataDirectory: String) -> String {
        URL(fileURLWithPath: dataDirectory).appendingPathComponent("sarvam.sqlite").path
    }

    static func configuration() -> Configuration {
        var config = Configuration()
        config.foreignKeysEnabled = true
        // Another process (the account commands, a second server) may hold the write lock briefly.
        config.busyMode = .timeout(10)
        config.label = "sarvam"
        return config
    }

    private func migrate() throws {
        do {
            try Self.migrator.migrate(writer)
        } catch {
            throw StoreError("cannot migrate the database\(path.map { " at \($0)" } ?? ""): \(error)")
        }
    }

    /// Names of the migrations applied so far, in the order they were registered.
    public func appliedMigrations() throws -> [String] {
        let applied = try writer.read { db in try Self.migrator.appliedIdentifiers(db) }
        return Self.migrator.migrations.filter(applied.contains)
    }

    /// Closes every connection; the store must not be used afterwards.
    public func close() throws {
        if let pool = writer as? DatabasePool { try pool.close() }
        if let queue = writer as? DatabaseQueue { try queue.close() }
    }

    public static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("createUsers") { db in
            try db.create(table: "users") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().check { length($0) > 0 }
                t.column("isAdmin", .boolean).notNull().defaults(to: false)
                t.column("createdAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("createAPIKeys") { db in
            try db.create(table: "api_keys") { t in
                t.primaryKey("id", .text)
                t.column("userId", .integer).notNull().indexed().references("users", onDelete: .cascade)
                // SHA-256 of the key: the secret itself is never stored.
                t.column("hash", .blob).notNull().unique().check { length($0) == 32 }
                t.column("prefix", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("revokedAt", .datetime)
            }
        }
        migrator.registerMigration("createConversations") { db in
            try db.create(table: "conversations") { t in
                t.primaryKey("id", .text)
                t.column("userId", .integer).notNull().references("users", onDelete: .cascade)
                t.column("title", .text).notNull()
                t.column("model", .text).notNull()
                t.column("settings", .text).notNull().defaults(to: "{}")
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(index: "conversations_by_user", on: "conversations", columns: ["userId", "updatedAt"])
        }
        migrator.registerMigration("createMessages") { db in
            try db.create(table: "messages") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("conversationId", .text).notNull().indexed().references("conversations", onDelete: .cascade)
                t.column("role", .text).notNull().check(sql: "role IN ('system', 'user', 'assistant')")
                t.column("content", .text).notNull()
                t.column("status", .text).notNull().defaults(to: "complete")
                    .check(sql: "status IN ('complete', 'interrupted', 'error')")
                t.column("tokenCount", .integer)
                t.column("promptTokens", .integer)
                t.column("generationSeconds", .double)
                t.column("finishReason", .text)
                t.column("droppedTurns", .integer)
                t.column("model", .text)
                t.column("error", .text)
                t.column("createdAt", .datetime).notNull()
            }
        }
        // Replies stopped by their user get a status of their own. SQLite cannot change a CHECK
        // constraint in place: the table is rebuilt (the migrator turns foreign keys off meanwhile).
        migrator.registerMigration("messageStatusStopped") { db in
            try db.create(table: "messages_new") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("conversationId", .text).notNull().references("conversations", onDelete: .cascade)
                t.column("role", .text).notNull().check(sql: "role IN ('system', 'user', 'assistant')")
                t.column("content", .text).notNull()
                t.column("status", .text).notNull().defaults(to: "complete")
                    .check(sql: "status IN ('complete', 'stopped', 'interrupted', 'error')")
                t.column("tokenCount", .integer)
                t.column("promptTokens", .integer)
                t.column("generationSeconds", .double)
                t.column("finishReason", .text)
                t.column("droppedTurns", .integer)
                t.column("model", .text)
                t.column("error", .text)
                t.column("createdAt", .datetime).notNull()
            }
            try db.execute(sql: "INSERT INTO messages_new SELECT * FROM messages")
            try db.drop(table: "messages")
            try db.rename(table: "messages_new", to: "messages")
            try db.create(index: "index_messages_on_conversationId", on: "messages", columns: ["conversationId"])
        }
        migrator.registerMigration("createJobs") { db in
            try db.create(table: "jobs") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("kind", .text).notNull()
                t.column("payload", .text).notNull()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("leaseOwner", .text)
                t.column("leaseUntil", .double)  // seconds since 1970
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(index: "jobs_by_kind", on: "jobs", columns: ["kind", "id"])
        }
        migrator.registerMigration("passwordsAndSessions") { db in
            // A bcrypt hash ($2b$...); NULL: the user signs in with an API key only.
            try db.alter(table: "users") { t in t.add(column: "passwordHash", .text) }
            try db.create(table: "sessions") { t in
                // SHA-256 of the cookie's token: the secret itself is never stored.
                t.primaryKey("hash", .blob).check { length($0) == 32 }
                t.column("userId", .integer).notNull().indexed().references("users", onDelete: .cascade)
                t.column("createdAt", .datetime).notNull()
                t.column("expiresAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("createQuotas") { db in
            try db.create(table: "user_quotas") { t in
                t.primaryKey("userId", .integer).references("users", onDelete: .cascade)
                t.column("requestsPerMinute", .integer).check { $0 >= 0 }
                t.column("tokensPerDay", .integer).check { $0 >= 0 }
            }
            try db.create(table: "usage_counters") { t in
                t.column("userId", .integer).notNull().references("users", onDelete: .cascade)
                t.column("kind", .text).notNull()
                t.column("windowStart", .integer).notNull()
                t.column("amount", .integer).notNull()
                t.primaryKey(["userId", "kind", "windowStart"])
            }
        }
        return migrator
    }
}

