import Foundation

/// Users and API keys, shared by the server (first-start admin) and the `sarvam users/keys` commands.
///
/// A key reads `sk-sarvam-<48 hex>`; only its SHA-256 is stored. Authentication looks the hash up
/// (an index lookup on a hash reveals nothing usable about the secret) and then compares the digests
/// in constant time.
public struct Accounts: Sendable {
    public let store: any ChatStore
    /// bcrypt cost of the passwords this sets (see Accounts+Passwords.swift).
    let passwordCost: UInt8
    public static let keyPrefix = "sk-sarvam-"
    public static let adminName = "admin"

    public init(store: any ChatStore, passwordCost: UInt8 = Accounts.defaultPasswordCost) {
        precondition((4...31).contains(passwordCost), "bcrypt's cost is 4 to 31")
        self.store = store
        self.passwordCost = passwordCost
    }

    public struct IssuedKey: Sendable {
        public var record: APIKeyRecord
        /// The secret: shown once, never stored.
        public var key: String
    }

    /// A fresh random key (192 bits from the system's CSPRNG).
    public static func generateKey() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return keyPrefix + Data(bytes).hexString
    }

    static func generateKeyId() -> String {
        var rng = SystemRandomNumberGenerator()
        return "key_" + Data((0..<6).map { _ in UInt8.random(in: 0...255, using: &rng) }).hexString
    }

    /// On a database without an admin: creates `admin` with `presetKey` (SARVAM_ADMIN_KEY) or a
    /// random key. Returns nil when an admin already exists.
    public func bootstrapAdmin(presetKey: String?) async throws -> IssuedKey? {
        if try await store.adminExists() { return nil }
        if let presetKey, presetKey.count < 16 {
            throw StoreError("SARVAM_ADMIN_KEY must have at least 16 characters; it has \(presetKey.count)")
        }
        let admin: User
        do {
            admin = try await store.createUser(name: Self.adminName, isAdmin: true)
        } catch let error as StoreError {
            // Another instance sharing the database created it meanwhile.
            if try await store.adminExists() { return nil }
            throw error
        }
        return try await issueKey(for: admin, key: presetKey)
    }

    public func addUser(name: String) async throws -> User {
        try await store.createUser(name: name, isAdmin: false)
    }

    public func createKey(userName: String) async throws -> IssuedKey {
        guard let user = try await store.user(named: userName) else {
            let known = try await store.users().map(\.name)
            throw StoreError("no user named \(userName.debugDescription); users: \(known.joined(separator: ", "))")
        }
        return try await issueKey(for: user, key: nil)
    }

    public func revokeKey(id: String) async throws {
        guard try await store.revokeKey(id: id) else {
            throw StoreError("no active key with id \(id.debugDescription) (ids look like key_1a2b3c4d5e6f)")
        }
    }

    public func issueKey(for user: User, key: String?) async throws -> IssuedKey {
        let key = key ?? Self.generateKey()
        let record = APIKeyRecord(
            id: Self.generateKeyId(), userId: user.userId, hash: SHA256.hash(key),
            prefix: String(key.prefix(Self.keyPrefix.count + 4)))
        try await store.insertKey(record)
        return IssuedKey(record: record, key: key)
    }

    /// The user a bearer key belongs to, or nil.
    public func authenticate(key: String) async throws -> User? {
        guard !key.isEmpty, key.utf8.count <= 512 else { return nil }
        return try await store.authenticate(keyHash: SHA256.hash(key))
    }
}
