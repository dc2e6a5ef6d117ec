import Foundation
import GRDB
import XCTest
import ChatServer

final class DatabaseMigrationTests: XCTestCase {
    let expected = ["createAPIKeys", "createConversations", "createMessages", "createUsers"]

    func testMigratesAnEmptyDatabase() throws {
        let database = try ChatDatabase()
        XCTAssertEqual(try database.appliedMigrations(), expected)
        let tables = try database.writer.read { db in
            try String.fetchAll(
                db,
                sql:
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%' ORDER BY name"
            )
        }
        XCTAssertEqual(tables, ["api_keys", "conversations", "messages", "users"])
        XCTAssertEqual(try database.writer.read { db in try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") }, true)
    }

    func testReopensAnExistingFileDatabase() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-db-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("data/sarvam.sqlite").path

        let first = try ChatDatabase(path: path)
        let journalMode = try await first.writer.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        XCTAssertEqual(journalMode, "wal")
        let store = GRDBChatStore(database: first)
        let issued = try await Accounts(store: store).bootstrapAdmin(presetKey: nil)
        let admin = try XCTUnwrap(issued)
        let conversation = try await store.createConversation(
            Conversation(id: "conv_1", userId: admin.record.userId, title: ConversationTitle.placeholder, model: "m"), systemPrompt: "sys")
        _ = try await store.appendMessage(StoredMessage(conversationId: conversation.id, role: .user, content: "hello there"))
        try first.close()

        let second = try ChatDatabase(path: path)
        XCTAssertEqual(try second.appliedMigrations(), expected)
        let reopened = GRDBChatStore(database: second)
        let accounts = Accounts(store: reopened)
        let awaited1 = try await accounts.bootstrapAdmin(presetKey: nil)
        XCTAssertNil(awaited1, "the admin exists already")
        let awaited2 = try await accounts.authenticate(key: admin.key)?.name
        XCTAssertEqual(awaited2, "admin")
        let messages = try await reopened.messages(conversationId: "conv_1")
        XCTAssertEqual(messages.map(\.content), ["sys", "hello there"])
        let awaited3 = try await reopened.conversation(id: "conv_1", userId: admin.record.userId)?.title
        XCTAssertEqual(awaited3, "hello there")
        try second.close()
    }

    func testSchemaInvariants() async throws {
        let database = try ChatDatabase()
        let store = GRDBChatStore(database: database)
        let user = try await store.createUser(name: "u", isAdmin: false)
        _ = try await store.createConversation(Conversation(id: "c", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        _ = try await store.appendMessage(StoredMessage(conversationId: "c", role: .user, content: "x"))
        // Foreign keys: a message needs its conversation; deleting the conversation deletes its messages.
        do {
            _ = try await store.appendMessage(StoredMessage(conversationId: "missing", role: .user, content: "x"))
            XCTFail("a message without a conversation was stored")
        } catch {}
        let awaited4 = try await store.deleteConversation(id: "c", userId: user.userId)
        XCTAssertTrue(awaited4)
        let awaited5 = try await database.writer.read { db in try StoredMessage.fetchCount(db) }
        XCTAssertEqual(awaited5, 0)
        // CHECK constraints on status and key hashes.
        _ = try await store.createConversation(Conversation(id: "d", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        do {
            try await database.writer.write { db in
                try db.execute(
                    sql:
                        "INSERT INTO messages (conversationId, role, content, status, createdAt) VALUES ('d', 'user', 'x', 'weird', CURRENT_TIMESTAMP)"
                )
            }
            XCTFail("an unknown status was stored")
        } catch {}
        do {
            try await store.insertKey(APIKeyRecord(id: "key_x", userId: user.userId, hash: Data([1, 2, 3]), prefix: "sk"))
            XCTFail("a short hash was stored")
        } catch {}
        do {
            _ = try await store.createUser(name: "u", isAdmin: false)
            XCTFail("duplicate user")
        } catch {}
    }
}

final class AccountsTests: XCTestCase {
    func testKeysAreStoredHashedAndCanBeRevoked() async throws {
        let database = try ChatDatabase()
        let store = GRDBChatStore(database: database)
        let accounts = Accounts(store: store)
        _ = try await accounts.addUser(name: "carol")
        let issued = try await accounts.createKey(userName: "carol")
        XCTAssertTrue(issued.key.hasPrefix(Accounts.keyPrefix))
        XCTAssertEqual(issued.key.count, Accounts.keyPrefix.count + 48)
        let dump = try database.writer.read { db in try Row.fetchAll(db, sql: "SELECT * FROM api_keys") }
        XCTAssertFalse("\(dump)".contains(String(issued.key.dropFirst(Accounts.keyPrefix.count + 4))), "the secret is not stored")
        let awaited6 = try await store.keys(userId: issued.record.userId).first?.hash
        XCTAssertEqual(awaited6, SHA256.hash(issued.key))
        let awaited7 = try await accounts.authenticate(key: issued.key)?.name
        XCTAssertEqual(awaited7, "carol")
        let awaited8 = try await accounts.authenticate(key: issued.key + "x")
        XCTAssertNil(awaited8)
        try await accounts.revokeKey(id: issued.record.id)
        let awaited9 = try await accounts.authenticate(key: issued.key)
        XCTAssertNil(awaited9)
        do { try await accounts.revokeKey(id: issued.record.id); XCTFail("revoked twice") } catch {}
        do { _ = try await accounts.createKey(userName: "nobody"); XCTFail("key for a missing user") } catch {
            XCTAssertTrue("\(error)".contains("carol"), "the error lists the users: \(error)")
        }
    }

    func testAdminBootstrapUsesPresetKeyOnce() async throws {
        let store = GRDBChatStore(database: try ChatDatabase())
        let accounts = Accounts(store: store)
        do { _ = try await accounts.bootstrapAdmin(presetKey: "short"); XCTFail("short preset key accepted") } catch {}
        let preset = "my-deployment-admin-key-0123456789"
        let issued = try await accounts.bootstrapAdmin(presetKey: preset)
        XCTAssertEqual(issued?.key, preset)
        let awaited10 = try await accounts.bootstrapAdmin(presetKey: preset)
        XCTAssertNil(awaited10)
        let admin = try await accounts.authenticate(key: preset)
        XCTAssertEqual(admin?.isAdmin, true)
    }
}
