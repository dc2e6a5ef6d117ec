import Foundation
import GRDB
import Logging
import PostgresNIO
import XCTest

@testable import ChatServer

/// One store engine under test: where a fresh empty store is, and raw SQL for the checks the
/// store's interface does not reach (constraints the store itself never violates).
struct StoreEngine: Sendable {
    var name: String
    /// The migration names a fresh store reports, in order.
    var expectedMigrations: [String]
    /// A new empty store location; the test case removes it at its end.
    var freshLocation: @Sendable (XCTestCase) throws -> StoreLocation
    /// Runs one statement outside the store; throws what the database said.
    var execute: @Sendable (any ChatStore, String) async throws -> Void
    /// Every row of a table as text.
    var dump: @Sendable (any ChatStore, String) async throws -> String
    /// An INSERT of a message with the status 'weird' into conversation 'd'.
    var insertWeirdStatus: String

    static let sqlite = StoreEngine(
        name: "SQLite",
        expectedMigrations: [
            "createUsers", "createAPIKeys", "createConversations", "createMessages", "messageStatusStopped", "createJobs",
            "passwordsAndSessions", "createQuotas",
        ],
        freshLocation: { test in
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-store-\(UUID().uuidString)")
            test.addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
            return .sqlite(path: folder.appendingPathComponent("sarvam.sqlite").path)
        },
        execute: { store, sql in
            try await (store as! GRDBChatStore).database.writer.write { db in try db.execute(sql: sql) }
        },
        dump: { store, table in
            try await (store as! GRDBChatStore).database.writer.read { db in "\(try Row.fetchAll(db, sql: "SELECT * FROM \(table)"))" }
        },
        insertWeirdStatus:
            "INSERT INTO messages (conversationId, role, content, status, createdAt) VALUES ('d', 'user', 'x', 'weird', CURRENT_TIMESTAMP)")

    static let postgres = StoreEngine(
        name: "PostgreSQL",
        expectedMigrations: ["accounts", "conversations", "jobs", "sessions", "quotas"],
        freshLocation: { _ in try StoreLocation(parsing: try PostgresTestServer.shared().freshDatabase()) },
        execute: { store, sql in
            try await (store as! PostgresChatStore).client.query(PostgresQuery(unsafeSQL: sql))
        },
        dump: { store, table in
            var text = ""
            let rows = try await (store as! PostgresChatStore).client.query(PostgresQuery(unsafeSQL: "SELECT t::text FROM \(table) t"))
            for try await line in rows.decode(String.self) { text += line + "\n" }
            return text
        },
        insertWeirdStatus:
            "INSERT INTO messages (conversation_id, role, content, status, created_at) VALUES ('d', 'user', 'x', 'weird', now())")
}

func quietLogger() -> Logger {
    var logger = Logger(label: "test.store")
    logger.logLevel = .critical
    return logger
}

/// The cases every engine must pass, through `ChatStore` only (plus the engine's raw SQL where a
/// case says so). `SQLiteStoreTests` and `PostgresStoreTests` run each of them.
enum StoreSuite {
    static func open(_ location: StoreLocation) async throws -> any ChatStore {
        try await openChatStore(location, logger: quietLogger())
    }

    static func migratesAndReopensKeepingEverything(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let location = try engine.freshLocation(test)
        let first = try await open(location)
        let applied = try await first.appliedMigrations()
        XCTAssertEqual(applied, engine.expectedMigrations)
        let issued = try await Accounts(store: first).bootstrapAdmin(presetKey: nil)
        let admin = try XCTUnwrap(issued)
        let conversation = try await first.createConversation(
            Conversation(id: "conv_1", userId: admin.record.userId, title: ConversationTitle.placeholder, model: "m"), systemPrompt: "sys")
        _ = try await first.appendMessage(StoredMessage(conversationId: conversation.id, role: .user, content: "hello there"))
        try await first.close()

        let second = try await open(location)
        let reapplied = try await second.appliedMigrations()
        XCTAssertEqual(reapplied, engine.expectedMigrations, "nothing applied twice")
        let accounts = Accounts(store: second)
        let again = try await accounts.bootstrapAdmin(presetKey: nil)
        XCTAssertNil(again, "the admin exists already")
        let name = try await accounts.authenticate(key: admin.key)?.name
        XCTAssertEqual(name, "admin")
        let messages = try await second.messages(conversationId: "conv_1")
        XCTAssertEqual(messages.map(\.content), ["sys", "hello there"])
        XCTAssertEqual(messages.map(\.role), [.system, .user])
        let title = try await second.conversation(id: "conv_1", userId: admin.record.userId)?.title
        XCTAssertEqual(title, "hello there", "the first user message names the conversation")
        try await second.close()
    }

    static func schemaInvariants(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let user = try await store.createUser(name: "u", isAdmin: false)
        _ = try await store.createConversation(Conversation(id: "c", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        _ = try await store.appendMessage(StoredMessage(conversationId: "c", role: .user, content: "x"))
        // Foreign keys: a message needs its conversation; deleting the conversation deletes its messages.
        do {
            _ = try await store.appendMessage(StoredMessage(conversationId: "missing", role: .user, content: "x"))
            XCTFail("a message without a conversation was stored")
        } catch is StoreUnavailableError {
            XCTFail("a refused statement is not an unavailable database")
        } catch {}
        let deleted = try await store.deleteConversation(id: "c", userId: user.userId)
        XCTAssertTrue(deleted)
        let left = try await store.messages(conversationId: "c")
        XCTAssertEqual(left.count, 0)
        let table = try await engine.dump(store, "messages")
        XCTAssertFalse(table.contains("x"), "the messages are gone from the table: \(table)")
        // CHECK constraints on status and key hashes; unique names.
        _ = try await store.createConversation(Conversation(id: "d", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        do {
            try await engine.execute(store, engine.insertWeirdStatus)
            XCTFail("an unknown status was stored")
        } catch {}
        do {
            try await store.insertKey(APIKeyRecord(id: "key_x", userId: user.userId, hash: Data([1, 2, 3]), prefix: "sk"))
            XCTFail("a short hash was stored")
        } catch {}
        do {
            _ = try await store.createUser(name: "u", isAdmin: false)
            XCTFail("duplicate user")
        } catch {
            XCTAssertTrue("\(error)".contains("already exists"), "\(error)")
        }
        do {
            _ = try await store.createUser(name: "  ", isAdmin: false)
            XCTFail("empty user name")
        } catch {}
    }

    static func keysAreStoredHashedAndCanBeRevoked(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let accounts = Accounts(store: store)
        _ = try await accounts.addUser(name: "carol")
        let issued = try await accounts.createKey(userName: "carol")
        XCTAssertTrue(issued.key.hasPrefix(Accounts.keyPrefix))
        XCTAssertEqual(issued.key.count, Accounts.keyPrefix.count + 48)
        let dump = try await engine.dump(store, "api_keys")
        XCTAssertTrue(dump.contains(issued.record.id), "the dump shows the key's row: \(dump)")
        XCTAssertFalse(dump.contains(String(issued.key.dropFirst(Accounts.keyPrefix.count + 4))), "the secret is not stored")
        let hash = try await store.keys(userId: issued.record.userId).first?.hash
        XCTAssertEqual(hash, SHA256.hash(issued.key))
        let carol = try await accounts.authenticate(key: issued.key)?.name
        XCTAssertEqual(carol, "carol")
        let wrong = try await accounts.authenticate(key: issued.key + "x")
        XCTAssertNil(wrong)
        try await accounts.revokeKey(id: issued.record.id)
        let revoked = try await accounts.authenticate(key: issued.key)
        XCTAssertNil(revoked)
        let listed = try await store.keys(userId: issued.record.userId)
        XCTAssertNotNil(listed.first?.revokedAt)
        do { try await accounts.revokeKey(id: issued.record.id); XCTFail("revoked twice") } catch {}
        do { _ = try await accounts.createKey(userName: "nobody"); XCTFail("key for a missing user") } catch {
            XCTAssertTrue("\(error)".contains("carol"), "the error lists the users: \(error)")
        }
    }

    static func passwordsAndSessionsAreStoredHashed(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let accounts = Accounts(store: store, passwordCost: 4)
        let dora = try await accounts.addUser(name: "dora")
        let none = try await store.credentials(userName: "dora")
        XCTAssertEqual(none?.user.name, "dora")
        XCTAssertNil(none?.passwordHash, "no password until one is set")
        let noUser = try await store.credentials(userName: "nobody")
        XCTAssertNil(noUser)
        let password = "dora's secret words"
        _ = try await accounts.setPassword(userName: "dora", password: password)
        let stored = try await store.credentials(userName: "dora")
        let hash = try XCTUnwrap(stored?.passwordHash)
        XCTAssertTrue(hash.hasPrefix("$2b$04$"), "bcrypt at the cost asked: \(hash)")
        let users = try await engine.dump(store, "users")
        XCTAssertFalse(users.contains(password), "the password is not stored")
        let checked = try await accounts.checkPassword(userName: "dora", password: password)
        XCTAssertEqual(checked?.name, "dora")
        let wrong = try await accounts.checkPassword(userName: "dora", password: password + "!")
        XCTAssertNil(wrong)

        let first = try await accounts.startSession(for: dora, lifetime: .seconds(3600))
        let second = try await accounts.startSession(for: dora, lifetime: .seconds(3600))
        XCTAssertNotEqual(first.token, second.token)
        let sessions = try await engine.dump(store, "sessions")
        XCTAssertFalse(sessions.contains(first.token) || sessions.contains(second.token), "tokens are not stored: \(sessions)")
        let found = try await accounts.authenticate(sessionToken: first.token)
        XCTAssertEqual(found?.user.name, "dora")
        XCTAssertEqual(found?.session.hash, SHA256.hash(first.token))
        let later = try await store.session(hash: SHA256.hash(first.token), now: Date().addingTimeInterval(3601))
        XCTAssertNil(later, "expired an hour on")

        // A password change keeps the named session and ends the others.
        let changed = try await store.setPasswordHash(userId: dora.userId, hash, keepingSession: first.record.hash)
        XCTAssertTrue(changed)
        let kept = try await accounts.authenticate(sessionToken: first.token)
        XCTAssertNotNil(kept)
        let ended = try await accounts.authenticate(sessionToken: second.token)
        XCTAssertNil(ended)
        let signedOut = try await accounts.endSession(token: first.token)
        XCTAssertTrue(signedOut)
        let twice = try await accounts.endSession(token: first.token)
        XCTAssertFalse(twice)
        let gone = try await accounts.authenticate(sessionToken: first.token)
        XCTAssertNil(gone)
        let missingUser = try await store.setPasswordHash(userId: 999_999, hash, keepingSession: nil)
        XCTAssertFalse(missingUser)

        // Sessions that expired are removed when a new one is stored; a session needs a 32-byte hash and its user.
        try await store.insertSession(SessionRecord(hash: SHA256.hash("old"), userId: dora.userId, expiresAt: Date().addingTimeInterval(-1)))
        _ = try await accounts.startSession(for: dora)
        let swept = try await store.session(hash: SHA256.hash("old"), now: Date().addingTimeInterval(-10))
        XCTAssertNil(swept, "the expired session was deleted, not only hidden")
        do {
            try await store.insertSession(SessionRecord(hash: Data([1, 2, 3]), userId: dora.userId, expiresAt: Date().addingTimeInterval(60)))
            XCTFail("a short session hash was stored")
        } catch {}
        do {
            try await store.insertSession(SessionRecord(hash: SHA256.hash("x"), userId: 999_999, expiresAt: Date().addingTimeInterval(60)))
            XCTFail("a session of no user was stored")
        } catch {}
    }

    static func adminBootstrapUsesPresetKeyOnce(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let accounts = Accounts(store: store)
        do { _ = try await accounts.bootstrapAdmin(presetKey: "short"); XCTFail("short preset key accepted") } catch {}
        let preset = "my-deployment-admin-key-0123456789"
        let issued = try await accounts.bootstrapAdmin(presetKey: preset)
        XCTAssertEqual(issued?.key, preset)
        let again = try await accounts.bootstrapAdmin(presetKey: preset)
        XCTAssertNil(again)
        let admin = try await accounts.authenticate(key: preset)
        XCTAssertEqual(admin?.isAdmin, true)
        let users = try await store.users().map(\.name)
        XCTAssertEqual(users, ["admin"])
    }

    static func conversationsArePagedNewestFirstAndOwned(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let alice = try await store.createUser(name: "alice", isAdmin: false)
        let bob = try await store.createUser(name: "bob", isAdmin: false)
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        for (i, id) in ["a", "b", "c"].enumerated() {
            let at = t0.addingTimeInterval(Double(i))
            _ = try await store.createConversation(
                Conversation(id: id, userId: alice.userId, title: ConversationTitle.placeholder, model: "m", createdAt: at, updatedAt: at),
                systemPrompt: nil)
        }
        // Same times: creation order breaks the tie (newest first).
        for id in ["x", "y"] {
            _ = try await store.createConversation(
                Conversation(id: id, userId: bob.userId, title: "t", model: "m", createdAt: t0, updatedAt: t0), systemPrompt: nil)
        }
        // A message moves "a" to the front and names it.
        _ = try await store.appendMessage(
            StoredMessage(conversationId: "a", role: .user, content: "  plan   a trip ", createdAt: t0.addingTimeInterval(10)))
        let page = try await store.conversations(userId: alice.userId, limit: 2, offset: 0)
        XCTAssertEqual(page.items.map(\.id), ["a", "c"])
        XCTAssertEqual(page.total, 3)
        XCTAssertEqual(page.items.first?.title, "plan a trip")
        let rest = try await store.conversations(userId: alice.userId, limit: 2, offset: 2)
        XCTAssertEqual(rest.items.map(\.id), ["b"])
        let bobs = try await store.conversations(userId: bob.userId, limit: 10, offset: 0)
        XCTAssertEqual(bobs.items.map(\.id), ["y", "x"])
        // Another user's conversation is missing for everything.
        let foreign = try await store.conversation(id: "a", userId: bob.userId)
        XCTAssertNil(foreign)
        let renamedForeign = try await store.renameConversation(id: "a", userId: bob.userId, title: "mine")
        XCTAssertNil(renamedForeign)
        let deletedForeign = try await store.deleteConversation(id: "a", userId: bob.userId)
        XCTAssertFalse(deletedForeign)
        let renamed = try await store.renameConversation(id: "b", userId: alice.userId, title: "Renamed")
        XCTAssertEqual(renamed?.title, "Renamed")
        let front = try await store.conversations(userId: alice.userId, limit: 1, offset: 0).items.map(\.id)
        XCTAssertEqual(front, ["b"], "renaming counts as an update")
        // A second user message keeps the title.
        _ = try await store.appendMessage(StoredMessage(conversationId: "a", role: .user, content: "another"))
        let title = try await store.conversation(id: "a", userId: alice.userId)?.title
        XCTAssertEqual(title, "plan a trip")
    }

    static func repliesAreUpdatedInPlace(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let store = try await open(try engine.freshLocation(test))
        defer { Task { try? await store.close() } }
        let user = try await store.createUser(name: "u", isAdmin: false)
        _ = try await store.createConversation(Conversation(id: "c", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        let question = try await store.appendMessage(StoredMessage(conversationId: "c", role: .user, content: "q", tokenCount: 3))
        var reply = try await store.appendMessage(
            StoredMessage(conversationId: "c", role: .assistant, content: "", status: .interrupted, droppedTurns: 1, model: "m"))
        XCTAssertNotNil(reply.id)
        XCTAssertNotEqual(reply.id, question.id)
        reply.content = "Hel"
        reply.promptTokens = 12
        let flushed = try await store.updateMessage(reply)
        XCTAssertTrue(flushed)
        var stored = try await store.messages(conversationId: "c")
        XCTAssertEqual(stored.map(\.content), ["q", "Hel"])
        XCTAssertEqual(stored.map(\.status), [.complete, .interrupted])
        XCTAssertEqual(stored[1].promptTokens, 12)
        reply.content = "Hello."
        reply.status = .complete
        reply.tokenCount = 2
        reply.generationSeconds = 0.25
        reply.finishReason = "stop"
        _ = try await store.updateMessage(reply)
        stored = try await store.messages(conversationId: "c")
        XCTAssertEqual(stored[1].content, "Hello.")
        XCTAssertEqual(stored[1].status, .complete)
        XCTAssertEqual(stored[1].tokenCount, 2)
        XCTAssertEqual(stored[1].generationSeconds, 0.25)
        XCTAssertEqual(stored[1].finishReason, "stop")
        XCTAssertEqual(stored[1].droppedTurns, 1)
        XCTAssertEqual(stored[1].model, "m")
        XCTAssertEqual(stored[0].tokenCount, 3)
        // Every status is kept as written.
        for status in MessageStatus.allCases {
            reply.status = status
            reply.error = status == .error ? "boom" : nil
            _ = try await store.updateMessage(reply)
            let read = try await store.messages(conversationId: "c")[1]
            XCTAssertEqual(read.status, status)
            XCTAssertEqual(read.error, reply.error)
        }
        try await store.deleteMessage(id: reply.id!)
        let gone = try await store.updateMessage(reply)
        XCTAssertFalse(gone, "an update of a deleted message says so")
        let count = try await store.messages(conversationId: "c").count
        XCTAssertEqual(count, 1)
        try await store.checkHealth()
    }

    /// Two store objects on one database stand for two server instances: what one writes, the
    /// other sees at once (no cache in either).
    static func instancesSeeEachOthersWritesAtOnce(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let location = try engine.freshLocation(test)
        let one = try await open(location)
        let two = try await open(location)
        defer {
            Task {
                try? await one.close(); try? await two.close()
            }
        }
        let user = try await Accounts(store: one).addUser(name: "dev")
        let issued = try await Accounts(store: one).issueKey(for: user, key: nil)
        let seen = try await Accounts(store: two).authenticate(key: issued.key)
        XCTAssertEqual(seen?.name, "dev", "a key created through one instance works on the other")
        _ = try await one.createConversation(Conversation(id: "c", userId: user.userId, title: "t", model: "m"), systemPrompt: nil)
        _ = try await one.appendMessage(StoredMessage(conversationId: "c", role: .user, content: "hi"))
        let history = try await two.messages(conversationId: "c").map(\.content)
        XCTAssertEqual(history, ["hi"])
        try await Accounts(store: two).revokeKey(id: issued.record.id)
        let refused = try await Accounts(store: one).authenticate(key: issued.key)
        XCTAssertNil(refused, "a key revoked through one instance is refused by the other at once")
    }

    /// The job queue: two instances never lease the same job; a job whose owner died (its lease
    /// ran out) is leased again, up to its attempts; a completed job is gone.
    static func jobsAreLeasedOnceAndRetriedAfterTheirLease(_ engine: StoreEngine, _ test: XCTestCase) async throws {
        let location = try engine.freshLocation(test)
        let one = try await open(location)
        let two = try await open(location)
        defer {
            Task {
                try? await one.close(); try? await two.close()
            }
        }
        let first = try await one.enqueueJob(kind: "title", payload: "conversation-1")
        let second = try await two.enqueueJob(kind: "title", payload: "conversation-2")
        _ = try await one.enqueueJob(kind: "other", payload: "x")
        let a = try await one.claimJob(kinds: ["title"], owner: "one", leaseSeconds: 60, maxAttempts: 3)
        let b = try await two.claimJob(kinds: ["title"], owner: "two", leaseSeconds: 0.5, maxAttempts: 3)
        XCTAssertEqual(a, StoreJob(id: first, kind: "title", payload: "conversation-1", attempts: 1))
        XCTAssertEqual(b, StoreJob(id: second, kind: "title", payload: "conversation-2", attempts: 1))
        let none = try await one.claimJob(kinds: ["title"], owner: "one", leaseSeconds: 60, maxAttempts: 3)
        XCTAssertNil(none, "both title jobs are leased; the other kind is not asked for")
        // Instance two dies holding job 2: once its lease runs out, instance one takes it.
        try await Task.sleep(for: .seconds(1))
        let retried = try await one.claimJob(kinds: ["title"], owner: "one", leaseSeconds: 0.1, maxAttempts: 3)
        XCTAssertEqual(retried, StoreJob(id: second, kind: "title", payload: "conversation-2", attempts: 2))
        try await one.completeJob(id: first)
        try await Task.sleep(for: .seconds(0.5))
        let third = try await two.claimJob(kinds: ["title"], owner: "two", leaseSeconds: 0.1, maxAttempts: 3)
        XCTAssertEqual(third?.attempts, 3)
        try await Task.sleep(for: .seconds(0.5))
        let exhausted = try await two.claimJob(kinds: ["title"], owner: "two", leaseSeconds: 60, maxAttempts: 3)
        XCTAssertNil(exhausted, "out of attempts; job 1 was completed")
        let other = try await two.claimJob(kinds: ["title", "other"], owner: "two", leaseSeconds: 60, maxAttempts: 3)
        XCTAssertEqual(other?.payload, "x")
        // Many claims at once over many jobs: each job leased exactly once.
        for k in 0..<20 { _ = try await one.enqueueJob(kind: "bulk", payload: "\(k)") }
        let leased = try await withThrowingTaskGroup(of: [String].self) { group in
            for store in [one, two] {
                group.addTask {
                    var got: [String] = []
                    while let job = try await store.claimJob(kinds: ["bulk"], owner: "x", leaseSeconds: 60, maxAttempts: 3) {
                        got.append(job.payload)
                    }
                    return got
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        XCTAssertEqual(leased.sorted(), (0..<20).map { "\($0)" }.sorted(), "every job once, none twice")
    }
}

/// `StoreSuite` on SQLite (GRDB), each case in a new database file.
final class SQLiteStoreTests: XCTestCase {
    let engine = StoreEngine.sqlite
    func testMigratesAndReopensKeepingEverything() async throws { try await StoreSuite.migratesAndReopensKeepingEverything(engine, self) }
    func testSchemaInvariants() async throws { try await StoreSuite.schemaInvariants(engine, self) }
    func testKeysAreStoredHashedAndCanBeRevoked() async throws { try await StoreSuite.keysAreStoredHashedAndCanBeRevoked(engine, self) }
    func testAdminBootstrapUsesPresetKeyOnce() async throws { try await StoreSuite.adminBootstrapUsesPresetKeyOnce(engine, self) }
    func testPasswordsAndSessionsAreStoredHashed() async throws {
        try await StoreSuite.passwordsAndSessionsAreStoredHashed(engine, self)
    }
    func testConversationsArePagedNewestFirstAndOwned() async throws {
        try await StoreSuite.conversationsArePagedNewestFirstAndOwned(engine, self)
    }
    func testRepliesAreUpdatedInPlace() async throws { try await StoreSuite.repliesAreUpdatedInPlace(engine, self) }
    func testInstancesSeeEachOthersWritesAtOnce() async throws { try await StoreSuite.instancesSeeEachOthersWritesAtOnce(engine, self) }
    func testJobsAreLeasedOnceAndRetriedAfterTheirLease() async throws {
        try await StoreSuite.jobsAreLeasedOnceAndRetriedAfterTheirLease(engine, self)
    }
}

/// `StoreSuite` on PostgreSQL, each case in a new database of the test process's server.
final class PostgresStoreTests: XCTestCase {
    let engine = StoreEngine.postgres
    func testMigratesAndReopensKeepingEverything() async throws { try await StoreSuite.migratesAndReopensKeepingEverything(engine, self) }
    func testSchemaInvariants() async throws { try await StoreSuite.schemaInvariants(engine, self) }
    func testKeysAreStoredHashedAndCanBeRevoked() async throws { try await StoreSuite.keysAreStoredHashedAndCanBeRevoked(engine, self) }
    func testAdminBootstrapUsesPresetKeyOnce() async throws { try await StoreSuite.adminBootstrapUsesPresetKeyOnce(engine, self) }
    func testPasswordsAndSessionsAreStoredHashed() async throws {
        try await StoreSuite.passwordsAndSessionsAreStoredHashed(engine, self)
    }
    func testConversationsArePagedNewestFirstAndOwned() async throws {
        try await StoreSuite.conversationsArePagedNewestFirstAndOwned(engine, self)
    }
    func testRepliesAreUpdatedInPlace() async throws { try await StoreSuite.repliesAreUpdatedInPlace(engine, self) }
    func testInstancesSeeEachOthersWritesAtOnce() async throws { try await StoreSuite.instancesSeeEachOthersWritesAtOnce(engine, self) }
    func testJobsAreLeasedOnceAndRetriedAfterTheirLease() async throws {
        try await StoreSuite.jobsAreLeasedOnceAndRetriedAfterTheirLease(engine, self)
    }
}
