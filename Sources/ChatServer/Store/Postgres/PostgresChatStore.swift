import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// `ChatStore` over PostgreSQL through a `PostgresClient` (a pool of connections): the store that
/// several server instances share. Each call is a statement or one transaction, with no state kept
/// in the process. Each call has a deadline: a database that is down or unreachable gives
/// `StoreUnavailableError` within `operationTimeout`, and the pool reconnects when it is back.
public final class PostgresChatStore: ChatStore {
    let client: PostgresClient
    private let runner: Task<Void, Never>
    let logger: Logger
    let operationTimeout: Duration
    /// `user@host:port/db` for messages (never the password).
    public let endpoint: String

    /// Connects to `url`, waits for the database for up to `connectTimeout`, and applies the
    /// missing migrations.
    public static func open(
        _ url: PostgresURL, logger: Logger, operationTimeout: Duration = .seconds(3), connectTimeout: Duration = .seconds(10)
    ) async throws -> PostgresChatStore {
        let store = PostgresChatStore(url: url, logger: logger, operationTimeout: operationTimeout)
        do {
            let ran = try await store.run("migrate", timeout: connectTimeout) { client, logger in
                try await PostgresMigrations.migrate(client, logger: logger)
            }
            if !ran.isEmpty { logger.notice("PostgreSQL schema migrated", metadata: ["applied": "\(ran.joined(separator: ","))"]) }
        } catch let error as StoreUnavailableError {
            try? await store.close()
            throw StoreUnavailableError(
                "\(error.description); is PostgreSQL running, and does the URL name its host, port, user and database?")
        } catch {
            try? await store.close()
            throw error
        }
        return store
    }

    init(url: PostgresURL, logger: Logger, operationTimeout: Duration) {
        var configuration = PostgresClient.Configuration(
            host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
            tls: Self.tls(url.tls))
        configuration.options.connectTimeout = operationTimeout
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        self.operationTimeout = operationTimeout
        self.endpoint = "\(url.user)@\(url.host):\(url.port)/\(url.database)"
        runner = Task { await client.run() }
    }

    private static func tls(_ mode: PostgresURL.TLSMode) -> PostgresClient.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(.makeClientConfiguration())
        case .require: return .require(.makeClientConfiguration())
        }
    }

    /// Runs `body` under the deadline and translates its errors (see `translate`).
    func run<T: Sendable>(
        _ what: String, timeout: Duration? = nil,
        _ body: @escaping @Sendable (PostgresClient, Logger) async throws -> T
    ) async throws -> T {
        let (client, logger, endpoint) = (self.client, self.logger, self.endpoint)
        let limit = timeout ?? operationTimeout
        do {
            return try await withDeadline(
                limit, message: { "PostgreSQL at \(endpoint) did not answer within \(limit) (\(what))" },
                operation: { try await body(client, logger) })
        } catch {
            throw Self.translate(error, endpoint: endpoint)
        }
    }

    /// All rows of `query`, each decoded by `decode`.
    static func rows<T>(
        _ query: PostgresQuery, on client: PostgresClient, logger: Logger, _ decode: (PostgresRow) throws -> T
    ) async throws -> [T] {
        var result: [T] = []
        for try await row in try await client.query(query, logger: logger) { result.append(try decode(row)) }
        return result
    }

    static func rows<T>(
        _ query: PostgresQuery, on connection: PostgresConnection, logger: Logger, _ decode: (PostgresRow) throws -> T
    ) async throws -> [T] {
        var result: [T] = []
        for try await row in try await connection.query(query, logger: logger) { result.append(try decode(row)) }
        return result
    }

    // MARK: Accounts

    public func adminExists() async throws -> Bool {
        try await run("adminExists") { client, logger in
            try await Self.rows("SELECT EXISTS (SELECT 1 FROM users WHERE is_admin)", on: client, logger: logger) {
                try $0.decode(Bool.self)
            }.first ?? false
        }
    }

    public func createUser(name: String, isAdmin: Bool) async throws -> User {
        let trimmed = try User.validatedName(name)
        let now = Date()
        let ids = try await run("createUser") { client, logger in
            try await Self.rows(
                """
                INSERT INTO users (name, is_admin, created_at) VALUES (\(trimmed), \(isAdmin), \(now))
                ON CONFLICT (name) DO NOTHING RETURNING id
                """, on: client, logger: logger
            ) { try $0.decode(Int64.self) }
        }
        guard let id = ids.first else { throw StoreError("a user named \(trimmed.debugDescription) already exists") }
        return User(id: id, name: trimmed, isAdmin: isAdmin, createdAt: now)
    }

    public func user(named name: String) async throws -> User? {
        try await run("user") { client, logger in
            try await Self.rows(
                "SELECT \(unescaped: Self.userColumns) FROM users WHERE name = \(name)", on: client, logger: logger, Self.user
            )
            .first
        }
    }

    public func users() async throws -> [User] {
        try await run("users") { client, logger in
            try await Self.rows("SELECT \(unescaped: Self.userColumns) FROM users ORDER BY id", on: client, logger: logger, Self.user)
        }
    }

    public func insertKey(_ key: APIKeyRecord) async throws {
        try await run("insertKey") { client, logger in
            _ = try await client.query(
                """
                INSERT INTO api_keys (id, user_id, hash, prefix, created_at, revoked_at)
                VALUES (\(key.id), \(key.userId), \(key.hash), \(key.prefix), \(key.createdAt), \(key.revokedAt))
                """, logger: logger)
        }
    }

    public func revokeKey(id: String) async throws -> Bool {
        let now = Date()
        return try await run("revokeKey") { client, logger in
            try await !Self.rows(
                "UPDATE api_keys SET revoked_at = \(now) WHERE id = \(id) AND revoked_at IS NULL RETURNING id",
                on: client, logger: logger
            ) { try $0.decode(String.self) }.isEmpty
        }
    }

    public func keys(userId: Int64) async throws -> [APIKeyRecord] {
        try await run("keys") { client, logger in
            try await Self.rows(
                "SELECT id, user_id, hash, prefix, created_at, revoked_at FROM api_keys WHERE user_id = \(userId) ORDER BY created_at",
                on: client, logger: logger
            ) { row in
                let (id, userId, hash, prefix, createdAt, revokedAt) = try row.decode((String, Int64, Data, String, Date, Date?).self)
                return APIKeyRecord(id: id, userId: userId, hash: hash, prefix: prefix, createdAt: createdAt, revokedAt: revokedAt)
            }
        }
    }

    public func authenticate(keyHash: Data) async throws -> User? {
        let found = try await run("authenticate") { client, logger in
            try await Self.rows(
                """
                SELECT k.hash, u.id, u.name, u.is_admin, u.created_at FROM api_keys k JOIN users u ON u.id = k.user_id
                WHERE k.hash = \(keyHash) AND k.revoked_at IS NULL
                """, on: client, logger: logger
            ) { row -> (Data, User) in
                let (hash, id, name, isAdmin, createdAt) = try row.decode((Data, Int64, String, Bool, Date).self)
                return (hash, User(id: id, name: name, isAdmin: isAdmin, createdAt: createdAt))
            }.first
        }
        guard let found, constantTimeEquals(found.0, keyHash) else { return nil }
        return found.1
    }

    public func credentials(userName: String) async throws -> (user: User, passwordHash: String?)? {
        try await run("credentials") { client, logger in
            try await Self.rows(
                "SELECT \(unescaped: Self.userColumns), password_hash FROM users WHERE name = \(userName)", on: client, logger: logger
            ) { row -> (user: User, passwordHash: String?) in
                let (id, name, isAdmin, createdAt, hash) = try row.decode((Int64, String, Bool, Date, String?).self)
                return (User(id: id, name: name, isAdmin: isAdmin, createdAt: createdAt), hash)
            }.first
        }
    }

    public func setPasswordHash(userId: Int64, _ hash: String?, keepingSession: Data?) async throws -> Bool {
        let keep = keepingSession ?? Data()
        return try await run("setPasswordHash") { client, logger in
            try await client.withTransaction(logger: logger) { connection in
                let updated = try await Self.rows(
                    "UPDATE users SET password_hash = \(hash) WHERE id = \(userId) RETURNING id", on: connection, logger: logger
                ) { try $0.decode(Int64.self) }
                guard !updated.isEmpty else { return false }
                try await connection.query("DELETE FROM sessions WHERE user_id = \(userId) AND hash <> \(keep)", logger: logger)
                return true
            }
        }
    }

    public func insertSession(_ session: SessionRecord) async throws {
        let s = session
        try await run("insertSession") { client, logger in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("DELETE FROM sessions WHERE expires_at < now()", logger: logger)
                try await connection.query(
                    """
                    INSERT INTO sessions (hash, user_id, created_at, expires_at)
                    VALUES (\(s.hash), \(s.userId), \(s.createdAt), \(s.expiresAt))
                    """, logger: logger)
            }
        }
    }

    public func session(hash: Data, now: Date) async throws -> (session: SessionRecord, user: User)? {
        let found = try await run("session") { client, logger in
            try await Self.rows(
                """
                SELECT s.hash, s.created_at, s.expires_at, u.id, u.name, u.is_admin, u.created_at
                FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = \(hash) AND s.expires_at > \(now)
                """, on: client, logger: logger
            ) { row -> (session: SessionRecord, user: User) in
                let (hash, created, expires, id, name, isAdmin, userCreated) = try row.decode(
                    (Data, Date, Date, Int64, String, Bool, Date).self)
                return (
                    SessionRecord(hash: hash, userId: id, createdAt: created, expiresAt: expires),
                    User(id: id, name: name, isAdmin: isAdmin, createdAt: userCreated)
                )
            }.first
        }
        guard let found, constantTimeEquals(found.session.hash, hash) else { return nil }
        return found
    }

    public func deleteSession(hash: Data) async throws -> Bool {
        try await run("deleteSession") { client, logger in
            try await !Self.rows("DELETE FROM sessions WHERE hash = \(hash) RETURNING user_id", on: client, logger: logger) {
                try $0.decode(Int64.self)
            }.isEmpty
        }
    }

    static let userColumns = "id, name, is_admin, created_at"
    static func user(_ row: PostgresRow) throws -> User {
        let (id, name, isAdmin, createdAt) = try row.decode((Int64, String, Bool, Date).self)
        return User(id: id, name: name, isAdmin: isAdmin, createdAt: createdAt)
    }

    // MARK: Conversations

    public func createConversation(_ conversation: Conversation, systemPrompt: String?) async throws -> Conversation {
        let c = conversation
        try await run("createConversation") { client, logger in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query(
                    """
                    INSERT INTO conversations (id, user_id, title, model, settings, created_at, updated_at)
                    VALUES (\(c.id), \(c.userId), \(c.title), \(c.model), \(c.settings), \(c.createdAt), \(c.updatedAt))
                    """, logger: logger)
                if let systemPrompt, !systemPrompt.isEmpty {
                    try await connection.query(
                        """
                        INSERT INTO messages (conversation_id, role, content, status, created_at)
                        VALUES (\(c.id), 'system', \(systemPrompt), 'complete', \(c.createdAt))
                        """, logger: logger)
                }
            }
        }
        return conversation
    }

    public func conversations(userId: Int64, limit: Int, offset: Int) async throws -> (items: [Conversation], total: Int) {
        try await run("conversations") { client, logger in
            let items = try await Self.rows(
                """
                SELECT \(unescaped: Self.conversationColumns) FROM conversations WHERE user_id = \(userId)
                ORDER BY updated_at DESC, seq DESC LIMIT \(limit) OFFSET \(offset)
                """, on: client, logger: logger, Self.conversation)
            let total =
                try await Self.rows("SELECT count(*) FROM conversations WHERE user_id = \(userId)", on: client, logger: logger) {
                    try $0.decode(Int.self)
                }.first ?? 0
            return (items, total)
        }
    }

    public func conversation(id: String, userId: Int64) async throws -> Conversation? {
        try await run("conversation") { client, logger in
            try await Self.rows(
                "SELECT \(unescaped: Self.conversationColumns) FROM conversations WHERE id = \(id) AND user_id = \(userId)",
                on: client, logger: logger, Self.conversation
            ).first
        }
    }

    public func messages(conversationId: String) async throws -> [StoredMessage] {
        try await run("messages") { client, logger in
            try await Self.rows(
                "SELECT \(unescaped: Self.messageColumns) FROM messages WHERE conversation_id = \(conversationId) ORDER BY id",
                on: client, logger: logger, Self.message)
        }
    }

    public func renameConversation(id: String, userId: Int64, title: String) async throws -> Conversation? {
        let now = Date()
        return try await run("renameConversation") { client, logger in
            try await Self.rows(
                """
                UPDATE conversations SET title = \(title), updated_at = \(now) WHERE id = \(id) AND user_id = \(userId)
                RETURNING \(unescaped: Self.conversationColumns)
                """, on: client, logger: logger, Self.conversation
            ).first
        }
    }

    public func deleteConversation(id: String, userId: Int64) async throws -> Bool {
        try await run("deleteConversation") { client, logger in
            try await !Self.rows(
                "DELETE FROM conversations WHERE id = \(id) AND user_id = \(userId) RETURNING id", on: client, logger: logger
            ) { try $0.decode(String.self) }.isEmpty
        }
    }

    public func appendMessage(_ message: StoredMessage) async throws -> StoredMessage {
        let m = message
        // The title the first user message gives a conversation that still has the placeholder.
        let newTitle = m.role == .user ? ConversationTitle.from(firstMessage: m.content) : nil
        let id = try await run("appendMessage") { client, logger in
            try await client.withTransaction(logger: logger) { connection -> Int64 in
                let ids = try await Self.rows(
                    """
                    INSERT INTO messages (\(unescaped: Self.messageInsertColumns))
                    VALUES (\(m.conversationId), \(m.role.rawValue), \(m.content), \(m.status.rawValue), \(m.tokenCount),
                        \(m.promptTokens), \(m.generationSeconds), \(m.finishReason), \(m.droppedTurns), \(m.model), \(m.error),
                        \(m.createdAt))
                    RETURNING id
                    """, on: connection, logger: logger
                ) { try $0.decode(Int64.self) }
                guard let id = ids.first else { throw StoreError("the message was not inserted") }
                try await connection.query(
                    """
                    UPDATE conversations SET updated_at = \(m.createdAt),
                        title = CASE WHEN \(newTitle != nil) AND title = \(ConversationTitle.placeholder) THEN \(newTitle ?? "") ELSE title END
                    WHERE id = \(m.conversationId)
                    """, logger: logger)
                return id
            }
        }
        var stored = message
        stored.id = id
        return stored
    }

    public func updateMessage(_ message: StoredMessage) async throws -> Bool {
        guard let id = message.id else { return false }
        let m = message
        return try await run("updateMessage") { client, logger in
            try await !Self.rows(
                """
                UPDATE messages SET content = \(m.content), status = \(m.status.rawValue), token_count = \(m.tokenCount),
                    prompt_tokens = \(m.promptTokens), generation_seconds = \(m.generationSeconds),
                    finish_reason = \(m.finishReason), dropped_turns = \(m.droppedTurns), model = \(m.model), error = \(m.error)
                WHERE id = \(id) RETURNING id
                """, on: client, logger: logger
            ) { try $0.decode(Int64.self) }.isEmpty
        }
    }

    public func deleteMessage(id: Int64) async throws {
        try await run("deleteMessage") { client, logger in
            _ = try await client.query("DELETE FROM messages WHERE id = \(id)", logger: logger)
        }
    }

    public func enqueueJob(kind: String, payload: String) async throws -> Int64 {
        try await run("enqueueJob") { client, logger in
            let rows = try await client.query("INSERT INTO jobs (kind, payload) VALUES (\(kind), \(payload)) RETURNING id", logger: logger)
            for try await id in rows.decode(Int64.self) { return id }
            throw StoreError("the job was not stored")
        }
    }

    public func claimJob(kinds: [String], owner: String, leaseSeconds: Double, maxAttempts: Int) async throws -> StoreJob? {
        try await run("claimJob") { client, logger in
            // SKIP LOCKED: an instance passes over the row another one is leasing at this moment.
            let rows = try await client.query(
                """
                UPDATE jobs SET attempts = attempts + 1, lease_owner = \(owner),
                    lease_until = now() + make_interval(secs => \(leaseSeconds))
                WHERE id = (
                    SELECT id FROM jobs
                    WHERE kind = ANY(\(kinds)) AND attempts < \(maxAttempts) AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
                RETURNING id, kind, payload, attempts
                """, logger: logger)
            for try await (id, kind, payload, attempts) in rows.decode((Int64, String, String, Int).self) {
                return StoreJob(id: id, kind: kind, payload: payload, attempts: attempts)
            }
            return nil
        }
    }

    public func completeJob(id: Int64) async throws {
        try await run("completeJob") { client, logger in
            _ = try await client.query("DELETE FROM jobs WHERE id = \(id)", logger: logger)
        }
    }

    public func quotaOverrides(userId: Int64) async throws -> QuotaLimits {
        try await run("quotaOverrides") { client, logger in
            let rows = try await client.query(
                "SELECT requests_per_minute, tokens_per_day FROM user_quotas WHERE user_id = \(userId)", logger: logger)
            for try await (rpm, tpd) in rows.decode((Int?, Int?).self) { return QuotaLimits(requestsPerMinute: rpm, tokensPerDay: tpd) }
            return QuotaLimits()
        }
    }

    public func setQuotaOverrides(userId: Int64, _ limits: QuotaLimits) async throws {
        try await run("setQuotaOverrides") { client, logger in
            _ = try await client.query(
                """
                INSERT INTO user_quotas (user_id, requests_per_minute, tokens_per_day)
                VALUES (\(userId), \(limits.requestsPerMinute), \(limits.tokensPerDay))
                ON CONFLICT (user_id) DO UPDATE
                    SET requests_per_minute = EXCLUDED.requests_per_minute, tokens_per_day = EXCLUDED.tokens_per_day
                """, logger: logger)
        }
    }

    public func addUsage(userId: Int64, kind: String, window: Int64, amount: Int) async throws -> Int {
        try await run("addUsage") { client, logger in
            _ = try await client.query(
                "DELETE FROM usage_counters WHERE user_id = \(userId) AND kind = \(kind) AND window_start < \(window)", logger: logger)
            // ON CONFLICT DO UPDATE locks the row: instances adding at once add in turn.
            let rows = try await client.query(
                """
                INSERT INTO usage_counters (user_id, kind, window_start, amount) VALUES (\(userId), \(kind), \(window), \(amount))
                ON CONFLICT (user_id, kind, window_start) DO UPDATE SET amount = usage_counters.amount + EXCLUDED.amount
                RETURNING amount
                """, logger: logger)
            for try await total in rows.decode(Int.self) { return total }
            throw StoreError("the usage counter was not stored")
        }
    }

    public func usage(userId: Int64, kind: String, window: Int64) async throws -> Int {
        try await run("usage") { client, logger in
            let rows = try await client.query(
                "SELECT amount FROM usage_counters WHERE user_id = \(userId) AND kind = \(kind) AND window_start = \(window)",
                logger: logger)
            for try await total in rows.decode(Int.self) { return total }
            return 0
        }
    }

    static let conversationColumns = "id, user_id, title, model, settings, created_at, updated_at"
    static func conversation(_ row: PostgresRow) throws -> Conversation {
        let (id, userId, title, model, settings, createdAt, updatedAt) = try row.decode(
            (String, Int64, String, String, String, Date, Date).self)
        return Conversation(
            id: id, userId: userId, title: title, model: model, settings: settings, createdAt: createdAt, updatedAt: updatedAt)
    }

    static let messageInsertColumns = """
        conversation_id, role, content, status, token_count, prompt_tokens, generation_seconds, finish_reason, \
        dropped_turns, model, error, created_at
        """
    static let messageColumns = "id, " + messageInsertColumns
    static func message(_ row: PostgresRow) throws -> StoredMessage {
        let (
            id, conversationId, role, content, status, tokenCount, promptTokens, generationSeconds, finishReason, droppedTurns, model,
            error, createdAt
        ) = try row.decode(
            (Int64, String, String, String, String, Int?, Int?, Double?, String?, Int?, String?, String?, Date).self)
        guard let role = ChatMessage.Role(rawValue: role), let status = MessageStatus(rawValue: status) else {
            throw StoreError("message \(id) has an unknown role \(role.debugDescription) or status \(status.debugDescription)")
        }
        return StoredMessage(
            id: id, conversationId: conversationId, role: role, content: content, status: status, tokenCount: tokenCount,
            promptTokens: promptTokens, generationSeconds: generationSeconds, finishReason: finishReason, droppedTurns: droppedTurns,
            model: model, error: error, createdAt: createdAt)
    }

    // MARK: Operation

    public func checkHealth() async throws {
        try await run("checkHealth") { client, logger in
            _ = try await Self.rows("SELECT 1", on: client, logger: logger) { try $0.decode(Int.self) }
        }
    }

    public func appliedMigrations() async throws -> [String] {
        try await run("appliedMigrations") { client, logger in try await PostgresMigrations.applied(client, logger: logger) }
    }

    public func close() async throws {
        runner.cancel()
        await runner.value
    }
}
