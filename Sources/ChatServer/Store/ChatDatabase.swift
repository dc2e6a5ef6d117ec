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

    /// Names of the migrations applied so far (tests, diagnostics).
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator.appliedIdentifiers(db) }.sorted()
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
        return migrator
    }
}

public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// `ChatStore` over GRDB.
public struct GRDBChatStore: ChatStore {
    public let database: ChatDatabase
    private var writer: any DatabaseWriter { database.writer }

    public init(database: ChatDatabase) { self.database = database }

    public func adminExists() async throws -> Bool {
        try await writer.read { db in try User.filter(Column("isAdmin") == true).fetchCount(db) > 0 }
    }

    public func createUser(name: String, isAdmin: Bool) async throws -> User {
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.count <= 64 else {
            throw StoreError("a user name must have 1 to 64 characters; got \(name.debugDescription)")
        }
        return try await writer.write { db in
            if try User.filter(Column("name") == trimmed).fetchCount(db) > 0 {
                throw StoreError("a user named \(trimmed.debugDescription) already exists")
            }
            var user = User(name: trimmed, isAdmin: isAdmin)
            try user.insert(db)
            return user
        }
    }

    public func user(named name: String) async throws -> User? {
        try await writer.read { db in try User.filter(Column("name") == name).fetchOne(db) }
    }

    public func users() async throws -> [User] {
        try await writer.read { db in try User.order(Column("id")).fetchAll(db) }
    }

    public func insertKey(_ key: APIKeyRecord) async throws {
        try await writer.write { db in try key.insert(db) }
    }

    public func revokeKey(id: String) async throws -> Bool {
        try await writer.write { db in
            let now = Date()
            return try APIKeyRecord.filter(Column("id") == id && Column("revokedAt") == nil)
                .updateAll(db, Column("revokedAt").set(to: now)) > 0
        }
    }

    public func keys(userId: Int64) async throws -> [APIKeyRecord] {
        try await writer.read { db in
            try APIKeyRecord.filter(Column("userId") == userId).order(Column("createdAt")).fetchAll(db)
        }
    }

    public func authenticate(keyHash: Data) async throws -> User? {
        try await writer.read { db in
            guard let key = try APIKeyRecord.filter(Column("hash") == keyHash && Column("revokedAt") == nil).fetchOne(db),
                constantTimeEquals(key.hash, keyHash)
            else { return nil }
            return try User.fetchOne(db, key: key.userId)
        }
    }

    public func createConversation(_ conversation: Conversation, systemPrompt: String?) async throws -> Conversation {
        try await writer.write { db in
            try conversation.insert(db)
            if let systemPrompt, !systemPrompt.isEmpty {
                var message = StoredMessage(
                    conversationId: conversation.id, role: .system, content: systemPrompt,
                    createdAt: conversation.createdAt)
                try message.insert(db)
            }
            return conversation
        }
    }

    public func conversations(userId: Int64, limit: Int, offset: Int) async throws -> (items: [Conversation], total: Int) {
        try await writer.read { db in
            let mine = Conversation.filter(Column("userId") == userId)
            let items = try mine.order(Column("updatedAt").desc, Column.rowID.desc)
                .limit(limit, offset: offset).fetchAll(db)
            return (items, try mine.fetchCount(db))
        }
    }

    public func conversation(id: String, userId: Int64) async throws -> Conversation? {
        try await writer.read { db in
            try Conversation.filter(Column("id") == id && Column("userId") == userId).fetchOne(db)
        }
    }

    public func messages(conversationId: String) async throws -> [StoredMessage] {
        try await writer.read { db in
            try StoredMessage.filter(Column("conversationId") == conversationId).order(Column("id")).fetchAll(db)
        }
    }

    public func renameConversation(id: String, userId: Int64, title: String) async throws -> Conversation? {
        try await writer.write { db in
            guard var conversation = try Conversation.filter(Column("id") == id && Column("userId") == userId).fetchOne(db)
            else { return nil }
            conversation.title = title
            conversation.updatedAt = Date()
            try conversation.update(db)
            return conversation
        }
    }

    public func deleteConversation(id: String, userId: Int64) async throws -> Bool {
        try await writer.write { db in
            try Conversation.filter(Column("id") == id && Column("userId") == userId).deleteAll(db) > 0
        }
    }

    public func appendMessage(_ message: StoredMessage) async throws -> StoredMessage {
        try await writer.write { db in
            var message = message
            try message.insert(db)
            guard var conversation = try Conversation.fetchOne(db, key: message.conversationId) else {
                throw StoreError("conversation \(message.conversationId) vanished")
            }
            conversation.updatedAt = message.createdAt
            if message.role == .user, conversation.title == ConversationTitle.placeholder {
                conversation.title = ConversationTitle.from(firstMessage: message.content)
            }
            try conversation.update(db)
            return message
        }
    }

    public func deleteMessage(id: Int64) async throws {
        _ = try await writer.write { db in try StoredMessage.deleteOne(db, key: id) }
    }
}

/// Titles: the first user message, shortened.
public enum ConversationTitle {
    public static let placeholder = "New chat"
    public static let maxLength = 48

    public static func from(firstMessage text: String) -> String {
        let words = text.split(whereSeparator: { $0.isWhitespace || $0.isNewline })
        var title = words.joined(separator: " ")
        if title.isEmpty { return placeholder }
        if title.count > maxLength {
            title = String(title.prefix(maxLength - 1))
            if let space = title.lastIndex(of: " "), title.distance(from: title.startIndex, to: space) > maxLength / 2 {
                title = String(title[..<space])
            }
            title += "…"
        }
        return title
    }
}
