import Foundation
import HummingbirdBcrypt
import NIOPosix

/// Passwords (bcrypt, through hummingbird-auth's `Bcrypt`) and sign-in sessions.
///
/// Bcrypt is slow on purpose (about a quarter of a second at cost 11 here), so hashing and checking run
/// on NIO's thread pool, never on an event loop or the cooperative pool. A session token is 256
/// random bits; only its SHA-256 is stored, so a copy of the database does not let anyone in.
extension Accounts {
    /// What bcrypt accepts: it reads at most 72 bytes and stops at a NUL, so longer passwords
    /// (or ones with a NUL) are refused instead of being cut silently.
    public static let passwordBytes = 8...72
    /// The bcrypt cost of new hashes (2^cost rounds); tests lower it through `Accounts(store:passwordCost:)`.
    public static let defaultPasswordCost: UInt8 = 11
    /// A session lasts this long from sign-in unless signed out or ended by a password change.
    public static let defaultSessionLifetime: Duration = .seconds(7 * 24 * 3600)

    /// Refuses a password bcrypt would not take whole.
    public static func validatePassword(_ password: String, field: String = "password") throws {
        let bytes = password.utf8.count
        guard passwordBytes.contains(bytes) else {
            throw StoreError(
                "\(field) must have \(passwordBytes.lowerBound) to \(passwordBytes.upperBound) bytes (UTF-8); it has \(bytes)")
        }
        guard !password.utf8.contains(0) else { throw StoreError("\(field) must not contain a NUL character") }
    }

    /// A random password for people to type: 16 letters and digits from an alphabet without look-alikes (~92 bits).
    public static func generatePassword() -> String {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789")
        var rng = SystemRandomNumberGenerator()
        return String((0..<16).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
    }

    func hashPassword(_ password: String) async throws -> String {
        let cost = passwordCost
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    /// Checks against `hash`, or against the decoy when nil (computed on first use, also off the cooperative pool).
    func verifyPassword(_ password: String, hash: String?) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash ?? Self.decoyHash) }
    }

    /// A hash that matches no password: checked against when a user has none (or does not
    /// exist), so a failed sign-in takes as long whatever the reason.
    static let decoyHash = Bcrypt.hash(generatePassword(), cost: defaultPasswordCost)

    /// Sets `userName`'s password and ends all their sessions (except `keepingSession`).
    public func setPassword(userName: String, password: String, keepingSession: Data? = nil) async throws -> User {
        try Self.validatePassword(password)
        guard let user = try await store.user(named: userName) else {
            throw StoreError("no user named \(userName.debugDescription)")
        }
        let hash = try await hashPassword(password)
        guard try await store.setPasswordHash(userId: user.userId, hash, keepingSession: keepingSession) else {
            throw StoreError("no user named \(userName.debugDescription)")
        }
        return user
    }

    /// The user whose password this is, or nil (no such user, no password set, or a wrong one).
    /// Takes one bcrypt check in every case.
    public func checkPassword(userName: String, password: String) async throws -> User? {
        guard password.utf8.count <= 4096, userName.utf8.count <= 256 else { return nil }
        let found = try await store.credentials(userName: userName)
        let matches = try await verifyPassword(password, hash: found?.passwordHash)
        guard let found, found.passwordHash != nil, matches else { return nil }
        return found.user
    }

    public struct IssuedSession: Sendable {
        public var record: SessionRecord
        /// The cookie's value: given to the browser once, never stored.
        public var token: String
    }

    /// A new session for `user`, valid for `lifetime`.
    public func startSession(for user: User, lifetime: Duration = Accounts.defaultSessionLifetime) async throws -> IssuedSession {
        var rng = SystemRandomNumberGenerator()
        let token = Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }).hexString
        let now = Date()
        let record = SessionRecord(
            hash: SHA256.hash(token), userId: user.userId, createdAt: now,
            expiresAt: now.addingTimeInterval(Double(lifetime.components.seconds)))
        try await store.insertSession(record)
        return IssuedSession(record: record, token: token)
    }

    /// The unexpired session a cookie's token names, with its user.
    public func authenticate(sessionToken token: String) async throws -> (session: SessionRecord, user: User)? {
        guard token.utf8.count == 64, token.utf8.allSatisfy({ $0 < 128 && ($0 >= 48 && $0 <= 57 || $0 >= 97 && $0 <= 102) }) else {
            return nil
        }
        return try await store.session(hash: SHA256.hash(token), now: Date())
    }

    public func endSession(token: String) async throws -> Bool {
        try await store.deleteSession(hash: SHA256.hash(token))
    }
}
