import Foundation
import GRDB

/// `ChatStore` over SQLite through GRDB: the default, one file in the data folder.
public struct GRDBChatStore: ChatStore {
    public let database: ChatDatabase
    private var writer: any DatabaseWriter { database.writer }

    public init(database: ChatDatabase) { self.database = database }

    /// A write transaction; a full disk becomes `StoreFullError` (SQLite reports ENOSPC as SQLITE_FULL).
    private func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await writer.write(updates)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_FULL {
            throw StoreFullError("the disk of the database\(database.path.map { " at \($0)" } ?? "") is full: \(error.message ?? "\(error)")")
        }
    }

    public func adminExists() async throws -> Bool {
        try await writer.read { db in try User.filter(Column("isAdmin") == true).fetchCount(db) > 0 }
    }

    public func createUser(name: String, isAdmin: Bool) async throws -> User {
        let trimmed = try User.validatedName(name)
        return try await write { db in
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
        try await write { db in try key.insert(db) }
    }

    public func revokeKey(id: String) async throws -> Bool {
        try await write { db in
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

    public func credentials(userName: String) async throws -> (user: User, passwordHash: String?)? {
        try await writer.read { db in
            guard let user = try User.filter(Column("name") == userName).fetchOne(db) else { return nil }
            // NULL reads as nil.
            let hash = try String.fetchOne(db, sql: "SELECT passwordHash FROM users WHERE id = ?", arguments: [user.id])
            return (user, hash)
        }
    }

    public func setPasswordHash(userId: Int64, _ hash: String?, keepingSession: Data?) async throws -> Bool {
        try await writer.write { db in
            try db.execute(sql: "UPDATE users SET passwordHash = ? WHERE id = ?", arguments: [hash, userId])
            guard db.changesCount > 0 else { return false }
            try db.execute(
                sql: "DELETE FROM sessions WHERE userId = ? AND hash IS NOT ?", arguments: [userId, keepingSession ?? Data()])
            return true
        }
    }

    public func insertSession(_ session: SessionRecord) async throws {
        try await writer.write { db in
            try SessionRecord.filter(Column("expiresAt") < Date()).deleteAll(db)
            try session.insert(db)
        }
    }

    public func session(hash: Data, now: Date) async throws -> (session: SessionRecord, user: User)? {
        try await writer.read { db in
            guard let session = try SessionRecord.filter(Column("hash") == hash).fetchOne(db),
                constantTimeEquals(session.hash, hash), session.expiresAt > now,
                let user = try User.fetchOne(db, key: session.userId)
            else { return nil }
            return (session, user)
        }
    }

    public func deleteSession(hash: Data) async throws -> Bool {
        try await writer.write { db in try SessionRecord.filter(Column("hash") == hash).deleteAll(db) > 0 }
    }

    public func createConversation(_ conversation: Conversation, systemPrompt: String?) async throws -> Conversation {
        try await write { db in
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
        try await write { db in
            guard var conversation = try Conversation.filter(Column("id") == id && Column("userId") == userId).fetchOne(db)
            else { return nil }
            conversation.title = title
            conversation.updatedAt = Date()
            try conversation.update(db)
            return conversation
        }
    }

    public func deleteConversation(id: String, userId: Int64) async throws -> Bool {
        try await write { db in
            try Conversation.filter(Column("id") == id && Column("userId") == userId).deleteAll(db) > 0
        }
    }

    public func appendMessage(_ message: StoredMessage) async throws -> StoredMessage {
        try await write { db in
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

    public func updateMessage(_ message: StoredMessage) async throws -> Bool {
        guard let id = message.id else { return false }
        return try await write { db in
            guard var stored = try StoredMessage.fetchOne(db, key: id) else { return false }
            // Only what a reply's flushes change; the conversation, role and time stay.
            stored.content = message.content
            stored.status = message.status
            stored.tokenCount = message.tokenCount
            stored.promptTokens = message.promptTokens
            stored.generationSeconds = message.generationSeconds
            stored.finishReason = message.finishReason
            stored.droppedTurns = message.droppedTurns
            stored.model = message.model
            stored.error = message.error
            try stored.update(db)
            return true
        }
    }

    public func deleteMessage(id: Int64) async throws {
        _ = try await write { db in try StoredMessage.deleteOne(db, key: id) }
    }

    public func checkHealth() async throws {
        _ = try await writer.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }

    public func appliedMigrations() async throws -> [String] {
        try database.appliedMigrations()
    }

    public func close() async throws {
        try database.close()
    }

    public func enqueueJob(kind: String, payload: String) async throws -> Int64 {
        try await write { db in
            try db.execute(sql: "INSERT INTO jobs (kind, payload, createdAt) VALUES (?, ?, ?)", arguments: [kind, payload, Date()])
            return db.lastInsertedRowID
        }
    }

    public func claimJob(kinds: [String], owner: String, leaseSeconds: Double, maxAttempts: Int) async throws -> StoreJob? {
        guard !kinds.isEmpty else { return nil }
        let now = Date().timeIntervalSince1970
        return try await write { db in
            let placeholders = kinds.map { _ in "?" }.joined(separator: ", ")
            var arguments = StatementArguments(kinds)
            arguments += [maxAttempts, now]
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: "SELECT id, kind, payload, attempts FROM jobs WHERE kind IN (\(placeholders)) AND attempts < ? "
                        + "AND (leaseUntil IS NULL OR leaseUntil < ?) ORDER BY id LIMIT 1",
                    arguments: arguments)
            else { return nil }
            let attempts: Int = row["attempts"]
            let job = StoreJob(id: row["id"], kind: row["kind"], payload: row["payload"], attempts: attempts + 1)
            try db.execute(
                sql: "UPDATE jobs SET attempts = ?, leaseOwner = ?, leaseUntil = ? WHERE id = ?",
                arguments: [job.attempts, owner, now + leaseSeconds, job.id])
            return job
        }
    }

    public func completeJob(id: Int64) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM jobs WHERE id = ?", arguments: [id]) }
    }

    public func quotaOverrides(userId: Int64) async throws -> QuotaLimits {
        try await writer.read { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT requestsPerMinute, tokensPerDay FROM user_quotas WHERE userId = ?", arguments: [userId])
            else { return QuotaLimits() }
            return QuotaLimits(requestsPerMinute: row["requestsPerMinute"], tokensPerDay: row["tokensPerDay"])
        }
    }

    public func setQuotaOverrides(userId: Int64, _ limits: QuotaLimits) async throws {
        try await write { db in
            try db.execute(
                sql: """
                    INSERT INTO user_quotas (userId, requestsPerMinute, tokensPerDay) VALUES (?, ?, ?)
                    ON CONFLICT (userId) DO UPDATE
                        SET requestsPerMinute = excluded.requestsPerMinute, tokensPerDay = excluded.tokensPerDay
                    """, arguments: [userId, limits.requestsPerMinute, limits.tokensPerDay])
        }
    }

    public func addUsage(userId: Int64, kind: String, window: Int64, amount: Int) async throws -> Int {
        try await write { db in
            try db.execute(
                sql: "DELETE FROM usage_counters WHERE userId = ? AND kind = ? AND windowStart < ?", arguments: [userId, kind, window])
            try db.execute(
                sql: """
                    INSERT INTO usage_counters (userId, kind, windowStart, amount) VALUES (?, ?, ?, ?)
                    ON CONFLICT (userId, kind, windowStart) DO UPDATE SET amount = amount + excluded.amount
                    """, arguments: [userId, kind, window, amount])
            return try Int.fetchOne(
                db, sql: "SELECT amount FROM usage_counters WHERE userId = ? AND kind = ? AND windowStart = ?",
                arguments: [userId, kind, window]) ?? 0
        }
    }

    public func usage(userId: Int64, kind: String, window: Int64) async throws -> Int {
        try await writer.read { db in
            try Int.fetchOne(
                db, sql: "SELECT amount FROM usage_counters WHERE userId = ? AND kind = ? AND windowStart = ?",
                arguments: [userId, kind, window]) ?? 0
        }
    }
}
