import Foundation

// The records the store keeps, and the one interface the server uses to keep them. Engines
// (SQLite in Store/SQLite, PostgreSQL in Store/Postgres) map these plain values to their own
// schema; nothing here depends on an engine.

public struct User: Codable, Sendable, Equatable {
    public var id: Int64?
    public var name: String
    public var isAdmin: Bool
    public var createdAt: Date

    public init(id: Int64? = nil, name: String, isAdmin: Bool, createdAt: Date = Date()) {
        self.id = id
        self.name = name
        self.isAdmin = isAdmin
        self.createdAt = createdAt
    }
    /// The id of a stored user (every user the store returns has one).
    public var userId: Int64 { id ?? 0 }
}

/// An API key as stored: only the SHA-256 of the secret, never the secret.
public struct APIKeyRecord: Codable, Sendable, Equatable {
    /// Public identifier, e.g. `key_1a2b3c4d5e6f` (what `sarvam keys revoke` takes).
    public var id: String
    public var userId: Int64
    /// SHA-256 of the whole key (32 bytes).
    public var hash: Data
    /// The key's first characters, to recognise it in listings.
    public var prefix: String
    public var createdAt: Date
    public var revokedAt: Date?

    public init(id: String, userId: Int64, hash: Data, prefix: String, createdAt: Date = Date(), revokedAt: Date? = nil) {
        self.id = id
        self.userId = userId
        self.hash = hash
        self.prefix = prefix
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// A sign-in session as stored: only the SHA-256 of the cookie's secret, never the secret.
public struct SessionRecord: Codable, Sendable, Equatable {
    /// SHA-256 of the session token (32 bytes).
    public var hash: Data
    public var userId: Int64
    public var createdAt: Date
    public var expiresAt: Date

    public init(hash: Data, userId: Int64, createdAt: Date = Date(), expiresAt: Date) {
        self.hash = hash
        self.userId = userId
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

public struct Conversation: Codable, Sendable, Equatable {
    public var id: String
    public var userId: Int64
    public var title: String
    public var model: String
    /// JSON object of per-conversation settings (`ConversationSettings`).
    public var settings: String
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String, userId: Int64, title: String, model: String, settings: String = "{}",
        createdAt: Date = Date(), updatedAt: Date = Date()
    ) {
        self.id = id
        self.userId = userId
        self.title = title
        self.model = model
        self.settings = settings
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// How a message ended. A reply is stored as `interrupted` when its generation starts and keeps that
/// status until it ends, so a process killed mid-reply leaves it `interrupted` with the text of the
/// last flush; `stopped` is a reply its user stopped; `error` a generation that failed.
public enum MessageStatus: String, Codable, Sendable, CaseIterable {
    case complete, stopped, interrupted, error
}

public struct StoredMessage: Codable, Sendable, Equatable {
    public var id: Int64?
    public var conversationId: String
    public var role: ChatMessage.Role
    public var content: String
    public var status: MessageStatus
    /// Tokens of `content` (completion tokens for a reply; an estimate for user text).
    public var tokenCount: Int?
    /// Replies: prompt tokens the model read for this reply.
    public var promptTokens: Int?
    /// Replies: seconds from the prompt being processed to the last token (for tokens/s).
    public var generationSeconds: Double?
    /// Replies: `stop` / `length`, nil when interrupted or stopped.
    public var finishReason: String?
    /// Replies: oldest turns left out of the prompt to fit the context.
    public var droppedTurns: Int?
    public var model: String?
    /// Status `error`: what went wrong.
    public var error: String?
    public var createdAt: Date

    public init(
        id: Int64? = nil, conversationId: String, role: ChatMessage.Role, content: String,
        status: MessageStatus = .complete, tokenCount: Int? = nil, promptTokens: Int? = nil,
        generationSeconds: Double? = nil, finishReason: String? = nil, droppedTurns: Int? = nil,
        model: String? = nil, error: String? = nil, createdAt: Date = Date()
    ) {
        self.id = id
        self.conversationId = conversationId
        self.role = role
        self.content = content
        self.status = status
        self.tokenCount = tokenCount
        self.promptTokens = promptTokens
        self.generationSeconds = generationSeconds
        self.finishReason = finishReason
        self.droppedTurns = droppedTurns
        self.model = model
        self.error = error
        self.createdAt = createdAt
    }
    public var chatMessage: ChatMessage { ChatMessage(role: role, content: content) }
}

/// Everything the server and the account commands keep. Conversation methods take the owner's id and
/// treat another user's conversation exactly like a missing one (the API answers 404 for both).
///
/// Every call reads or writes the database itself: nothing is cached in the process, so what one
/// server instance writes (a user, a key, a revoked key, a message) is seen by every other instance
/// sharing the database at once. A database that cannot be reached throws `StoreUnavailableError`
/// (the API answers 503); a refused write (a duplicate name, a missing conversation) throws `StoreError`.
public protocol ChatStore: Sendable {
    // Accounts
    func adminExists() async throws -> Bool
    /// Throws `StoreError` for a name that is empty, longer than 64 characters or taken.
    func createUser(name: String, isAdmin: Bool) async throws -> User
    func user(named name: String) async throws -> User?
    func users() async throws -> [User]
    func insertKey(_ key: APIKeyRecord) async throws
    /// Marks the key revoked; false when there is no such unrevoked key.
    func revokeKey(id: String) async throws -> Bool
    func keys(userId: Int64) async throws -> [APIKeyRecord]
    /// The user owning the unrevoked key whose SHA-256 is `hash`.
    func authenticate(keyHash: Data) async throws -> User?

    // Passwords and sign-in sessions
    /// The user and their bcrypt password hash (nil when they have no password).
    func credentials(userName: String) async throws -> (user: User, passwordHash: String?)?
    /// Sets (or clears, with nil) a user's password hash and ends every session of theirs except
    /// `keepingSession` (a session's hash), in one transaction; false when there is no such user.
    func setPasswordHash(userId: Int64, _ hash: String?, keepingSession: Data?) async throws -> Bool
    /// Stores a new session; sessions that have expired (of anyone) are removed on the way.
    func insertSession(_ session: SessionRecord) async throws
    /// The session whose SHA-256 is `hash` and its user, when it has not expired at `now`.
    func session(hash: Data, now: Date) async throws -> (session: SessionRecord, user: User)?
    /// Ends the session; false when there was none.
    func deleteSession(hash: Data) async throws -> Bool

    // Conversations
    func createConversation(_ conversation: Conversation, systemPrompt: String?) async throws -> Conversation
    /// Newest (last updated) first; ties in creation order, newest first.
    func conversations(userId: Int64, limit: Int, offset: Int) async throws -> (items: [Conversation], total: Int)
    func conversation(id: String, userId: Int64) async throws -> Conversation?
    /// In the order they were appended.
    func messages(conversationId: String) async throws -> [StoredMessage]
    func renameConversation(id: String, userId: Int64, title: String) async throws -> Conversation?
    func deleteConversation(id: String, userId: Int64) async throws -> Bool
    /// Inserts the message (committed when this returns) and bumps the conversation's `updatedAt`;
    /// sets the title from the first user message while the conversation has the placeholder title.
    func appendMessage(_ message: StoredMessage) async throws -> StoredMessage
    /// Rewrites a stored message's content, status and reply fields (a streamed reply's flushes);
    /// false when the message is gone (its conversation was deleted).
    func updateMessage(_ message: StoredMessage) async throws -> Bool
    func deleteMessage(id: Int64) async throws

    // Background jobs: a queue in the database every instance shares (the seed's message queue).
    /// Queues a job of `kind` (committed when this returns); returns its id.
    func enqueueJob(kind: String, payload: String) async throws -> Int64
    /// Leases the oldest job of one of `kinds` that is neither leased nor out of attempts to
    /// `owner` for `leaseSeconds` (counting an attempt); nil when there is none. A job whose owner
    /// died is taken again once its lease has run out. Two instances never lease the same job
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer).
    func claimJob(kinds: [String], owner: String, leaseSeconds: Double, maxAttempts: Int) async throws -> StoreJob?
    /// Removes a finished job.
    func completeJob(id: Int64) async throws

    // Quotas: per-user limits the admin set, and usage counters every instance shares.
    /// The user's own limits; nil fields follow the server's defaults.
    func quotaOverrides(userId: Int64) async throws -> QuotaLimits
    func setQuotaOverrides(userId: Int64, _ limits: QuotaLimits) async throws
    /// Adds `amount` to the user's `kind` counter of time window `window` and returns its new total,
    /// atomically (instances counting at once never lose a count); counters of that kind from older
    /// windows are dropped.
    func addUsage(userId: Int64, kind: String, window: Int64, amount: Int) async throws -> Int
    /// The counter's total, 0 when there is none.
    func usage(userId: Int64, kind: String, window: Int64) async throws -> Int

    // Operation
    /// Returns when the database answers a trivial query; throws `StoreUnavailableError` otherwise.
    func checkHealth() async throws
    /// The schema migrations applied to the database, by name, in the order they were applied.
    func appliedMigrations() async throws -> [String]
    /// Closes the connections; the store must not be used afterwards.
    func close() async throws
}

/// A refused or failed store operation, with a message for people.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The database cannot be reached (down, restarting, or too slow to answer in time). Requests
/// that need it get 503 with `Retry-After`; the store reconnects by itself when it is back.
public struct StoreUnavailableError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The database's disk is full: nothing new can be written, while what is stored stays readable.
/// Requests that write get 507 `storage_full`; they succeed again once space is freed.
public struct StoreFullError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
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

extension User {
    /// The name rule every engine applies before inserting (the engines check uniqueness).
    static func validatedName(_ name: String) throws -> String {
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.count <= 64 else {
            throw StoreError("a user name must have 1 to 64 characters; got \(name.debugDescription)")
        }
        return trimmed
    }
}

/// A job leased from the store's queue (`ChatStore.claimJob`).
public struct StoreJob: Sendable, Equatable {
    public var id: Int64
    public var kind: String
    public var payload: String
    /// Leases so far, this one included.
    public var attempts: Int

    public init(id: Int64, kind: String, payload: String, attempts: Int) {
        self.id = id
        self.kind = kind
        self.payload = payload
        self.attempts = attempts
    }
}

/// A user's limits: requests per minute and generated tokens per UTC day. As the admin sets them for
/// a user, nil means "the server's default"; 0 means no limit.
public struct QuotaLimits: Sendable, Equatable, Codable {
    public var requestsPerMinute: Int?
    public var tokensPerDay: Int?

    public init(requestsPerMinute: Int? = nil, tokensPerDay: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerDay = tokensPerDay
    }
}
