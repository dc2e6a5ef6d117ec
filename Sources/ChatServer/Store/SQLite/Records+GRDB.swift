import Foundation
import GRDB

// How the records map to SQLite tables: column names are the property names (GRDB's Codable
// mapping); the schema with its invariants is in ChatDatabase.swift.

extension User: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "users"
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension APIKeyRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "api_keys"
}

extension SessionRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "sessions"
}

extension Conversation: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "conversations"
}

extension StoredMessage: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "messages"
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

// Stored as their raw text ('user', 'complete'), which the schema's CHECK constraints name.
extension MessageStatus: DatabaseValueConvertible {}
extension ChatMessage.Role: DatabaseValueConvertible {}
