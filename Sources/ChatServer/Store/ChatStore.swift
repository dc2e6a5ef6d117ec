import Foundation
import GRDB

// Records of the chat database. Column names are the property names (GRDB's Codable mapping);
// the schema (with its invariants) is in ChatDatabase.swift.

public struct User: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "users"
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
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
    /// The id of a stored user (every user the store returns has one).
    public var userId: Int64 { id ?? 0 }
}

/// An API key as stored: only the SHA-256 of the secret, never the secret.
public struct APIKeyRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "api_keys"
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

public struct Conversation: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "conversations"
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

public enum MessageStatus: String, Codable, Sendable, DatabaseValueConvertible {
    case complete, interrupted, error
}

// Stored as their raw text ('user', 'complete'), which the schema's CHECK constraints name.
extension ChatMessage.Role: DatabaseValueConvertible {}

public struct StoredMessage: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "messages"
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
    /// Replies: `stop` / `length`, nil when interrupted.
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
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
    public var chatMessage: ChatMessage { ChatMessage(role: role, content: content) }
}

/// Everything the server and the account commands keep. Conversation methods take the owner's id and
/// treat another user's conversation exactly like a missing one (the API answers 404 for both).
public protocol ChatStore: Sendable {
    // Accounts
    func adminExists() async throws -> Bool
    func createUser(name: String, isAdmin: Bool) async throws -> User
    func user(named name: String) async throws -> User?
    func users() async throws -> [User]
    func insertKey(_ key: APIKeyRecord) async throws
    /// Marks the key revoked; false when there is no such unrevoked key.
    func revokeKey(id: String) async throws -> Bool
    func keys(userId: Int64) async throws -> [APIKeyRecord]
    /// The user owning the unrevoked key whose SHA-256 is `hash`.
    func authenticate(keyHash: Data) async throws -> User?

    // Conversations
    func createConversation(_ conversation: Conversation, systemPrompt: String?) async throws -> Conversation
    /// Newest (last updated) first.
    func conversations(userId: Int64, limit: Int, offset: Int) async throws -> (items: [Conversation], total: Int)
    func conversation(id: String, userId: Int64) async throws -> Conversation?
    func messages(conversationId: String) async throws -> [StoredMessage]
    func renameConversation(id: String, userId: Int64, title: String) async throws -> Conversation?
    func deleteConversation(id: String, userId: Int64) async throws -> Bool
    /// Inserts the message and bumps the conversation's `updatedAt`; sets the title from the first
    /// user message while the conversation has the placeholder title.
    func appendMessage(_ message: StoredMessage) async throws -> StoredMessage
    func deleteMessage(id: Int64) async throws
}
