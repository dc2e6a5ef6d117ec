import ChatServer
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import XCTest

/// Signing in with a password on the router: the session cookie and its attributes, sign-out,
/// password changes and admin resets ending sessions, the CSRF header, and the sign-in rate limit.
final class SessionTests: XCTestCase {
    static let password = "correct horse battery"

    /// A fixture whose user alice has `password`, set at the test's low bcrypt cost.
    static func fixture(
        configuration: ChatServerConfiguration = ServerFixture.fastConfiguration, limiter: SignInLimiter = SignInLimiter()
    ) async throws -> ServerFixture {
        let f = try await ServerFixture(configuration: configuration, signInLimiter: limiter)
        _ = try await f.service.accounts.setPassword(userName: "alice", password: password)
        return f
    }

    static func signIn(_ client: some TestClientProtocol, _ name: String, _ password: String, csrf: Bool = true) async throws -> TestResponse {
        var h = HTTPFields()
        h[.contentType] = "application/json"
        if csrf { h[HTTPField.Name("X-Sarvam-CSRF")!] = "1" }
        return try await client.execute(
            uri: "/api/session", method: .post, headers: h, body: ByteBuffer(string: jsonString(["name": name, "password": password])))
    }

    /// The session token in a response's `Set-Cookie`.
    static func token(_ response: TestResponse) -> String? {
        guard let cookie = response.headers[.setCookie], cookie.hasPrefix("sarvam_session=") else { return nil }
        return String(cookie.dropFirst("sarvam_session=".count).prefix { $0 != ";" })
    }

    /// A request signed in by the cookie (with the CSRF header unless told otherwise).
    static func send(
        _ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, cookie: String, csrf: Bool = true,
        json: String? = nil
    ) async throws -> TestResponse {
        var h = HTTPFields()
        h[.contentType] = "application/json"
        h[.cookie] = "theme=dark; sarvam_session=\(cookie)"
        if csrf { h[HTTPField.Name("X-Sarvam-CSRF")!] = "1" }
        return try await client.execute(uri: uri, method: method, headers: h, body: json.map { ByteBuffer(string: $0) })
    }

    func testSignInGivesAStrictHttpOnlyCookieThatSignsRequestsIn() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            let r = try await Self.signIn(client, "alice", Self.password)
            XCTAssertEqual(r.status, .ok, r.text)
            XCTAssertEqual((r.object["user"] as? [String: Any])?["name"] as? String, "alice")
            let cookie = try XCTUnwrap(r.headers[.setCookie])
            let attributes = Set(cookie.split(separator: ";").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) })
            XCTAssertTrue(attributes.isSuperset(of: ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"]), cookie)
            XCTAssertFalse(attributes.contains("Secure"), "no Secure without TLS (the browser would drop it on http): \(cookie)")
            let token = try XCTUnwrap(Self.token(r))
            XCTAssertEqual(token.count, 64, "256 bits in hex")
            XCTAssertNotNil(UInt64(token.prefix(16), radix: 16))

            let me = try await Self.send(client, .get, "/api/me", cookie: token, csrf: false)
            XCTAssertEqual(me.status, .ok, me.text)
            XCTAssertEqual(me.object["name"] as? String, "alice")
            // Only the token's SHA-256 is stored.
            let stored = try await f.store.session(hash: SHA256.hash(token), now: Date())
            XCTAssertEqual(stored?.user.name, "alice")
            let r1 = try await f.store.session(hash: SHA256.hash(String(token.reversed())), now: Date())
            XCTAssertNil(r1)
            let forged = try await Self.send(client, .get, "/api/me", cookie: String(repeating: "a", count: 64))
            XCTAssertEqual(forged.status, .unauthorized)
            XCTAssertEqual(forged.error["code"] as? String, "session_expired")
        }
    }

    func testWrongPasswordUnknownUserAndNoPasswordAllAnswerTheSame401() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            var bodies: [String] = []
            for (name, password) in [("alice", "wrong password"), ("nobody", Self.password), ("bob", Self.password)] {
                let r = try await Self.signIn(client, name, password)
                XCTAssertEqual(r.status, .unauthorized, "\(name): \(r.text)")
                XCTAssertNil(r.headers[.setCookie])
                XCTAssertEqual(r.error["code"] as? String, "invalid_credentials")
                bodies.append(r.text)
            }
            XCTAssertEqual(Set(bodies).count, 1, "the answer does not tell which users exist")
            let bad = try await client.execute(
                uri: "/api/session", method: .post, headers: [.contentType: "application/json", HTTPField.Name("X-Sarvam-CSRF")!: "1"],
                body: ByteBuffer(string: #"{"name":"alice"}"#))
            XCTAssertEqual(bad.status, .badRequest, bad.text)
        }
    }

    func testCookieRequestsThatChangeSomethingNeedTheCSRFHeader() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            let refused = try await Self.signIn(client, "alice", Self.password, csrf: false)
            XCTAssertEqual(refused.status, .forbidden, "a forged cross-site sign-in is refused")
            XCTAssertEqual(refused.error["code"] as? String, "csrf_header_missing")
            let tokenResponse = try await Self.signIn(client, "alice", Self.password)
            let token = try XCTUnwrap(Self.token(tokenResponse))

            let forged = try await Self.send(client, .post, "/api/conversations", cookie: token, csrf: false, json: "{}")
            XCTAssertEqual(forged.status, .forbidden, forged.text)
            XCTAssertEqual(forged.error["code"] as? String, "csrf_header_missing")
            XCTAssertEqual(forged.error["type"] as? String, "permission_error")
            let alice = try await f.store.user(named: "alice")!.userId
            let (items, _) = try await f.store.conversations(userId: alice, limit: 10, offset: 0)
            XCTAssertTrue(items.isEmpty, "nothing was created")
            let forgedDelete = try await Self.send(client, .delete, "/api/session", cookie: token, csrf: false)
            XCTAssertEqual(forgedDelete.status, .forbidden)

            let list = try await Self.send(client, .get, "/api/conversations", cookie: token, csrf: false)
            XCTAssertEqual(list.status, .ok, "reads need no header")
            let created = try await Self.send(client, .post, "/api/conversations", cookie: token, json: "{}")
            XCTAssertEqual(created.status, .created, created.text)
            // API clients: the key alone, no header.
            let keyed = try await client.send(.post, "/api/conversations", key: f.keyB, json: "{}")
            XCTAssertEqual(keyed.status, .created, keyed.text)
        }
    }

    func testSignOutEndsTheSessionAndClearsTheCookie() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            let tokenResponse = try await Self.signIn(client, "alice", Self.password)
            let token = try XCTUnwrap(Self.token(tokenResponse))
            let out = try await Self.send(client, .delete, "/api/session", cookie: token)
            XCTAssertEqual(out.status, .ok, out.text)
            XCTAssertEqual(out.object["deleted"] as? Bool, true)
            let cleared = try XCTUnwrap(out.headers[.setCookie])
            XCTAssertTrue(cleared.hasPrefix("sarvam_session=;") && cleared.contains("Max-Age=0"), cleared)
            let after = try await Self.send(client, .get, "/api/me", cookie: token)
            XCTAssertEqual(after.status, .unauthorized)
            let r2 = try await f.store.session(hash: SHA256.hash(token), now: Date())
            XCTAssertNil(r2, "deleted from the store")
            let again = try await Self.send(client, .delete, "/api/session", cookie: token)
            XCTAssertEqual(again.object["deleted"] as? Bool, false)
        }
    }

    func testChangingThePasswordNeedsTheOldOneAndEndsTheOtherSessions() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            let hereResponse = try await Self.signIn(client, "alice", Self.password)
            let here = try XCTUnwrap(Self.token(hereResponse))
            let elsewhereResponse = try await Self.signIn(client, "alice", Self.password)
            let elsewhere = try XCTUnwrap(Self.token(elsewhereResponse))
            let newPassword = "a new and longer one"
            let wrong = try await Self.send(
                client, .post, "/api/me/password", cookie: here,
                json: jsonString(["current_password": "not it at all", "new_password": newPassword]))
            XCTAssertEqual(wrong.status, .unauthorized, wrong.text)
            XCTAssertEqual(wrong.error["param"] as? String, "current_password")
            let short = try await Self.send(
                client, .post, "/api/me/password", cookie: here, json: jsonString(["current_password": Self.password, "new_password": "short"]))
            XCTAssertEqual(short.status, .badRequest, short.text)
            XCTAssertEqual(short.error["param"] as? String, "new_password")
            let changed = try await Self.send(
                client, .post, "/api/me/password", cookie: here,
                json: jsonString(["current_password": Self.password, "new_password": newPassword]))
            XCTAssertEqual(changed.status, .ok, changed.text)

            let r3 = try await Self.send(client, .get, "/api/me", cookie: here)
            XCTAssertEqual(r3.status, .ok, "the session that changed it stays")
            let r4 = try await Self.send(client, .get, "/api/me", cookie: elsewhere)
            XCTAssertEqual(r4.status, .unauthorized, "the others end")
            let r5 = try await Self.signIn(client, "alice", Self.password)
            XCTAssertEqual(r5.status, .unauthorized, "the old password is gone")
            let r6 = try await Self.signIn(client, "alice", newPassword)
            XCTAssertEqual(r6.status, .ok)
            // With the API key: the same check of the old password.
            let byKey = try await client.send(
                .post, "/api/me/password", key: f.keyA, json: jsonString(["current_password": newPassword, "new_password": Self.password]))
            XCTAssertEqual(byKey.status, .ok, byKey.text)
            let r7 = try await Self.send(client, .get, "/api/me", cookie: here)
            XCTAssertEqual(r7.status, .unauthorized, "every session ends")
        }
    }

    func testTheAdminCreatesUsersWithPasswordsAndResetsThem() async throws {
        let f = try await Self.fixture()
        let admin = try await f.service.accounts.bootstrapAdmin(presetKey: nil)!.key
        try await f.test { client in
            let created = try await client.send(
                .post, "/api/admin/users", key: admin, json: jsonString(["name": "carol", "password": "carol's first one"]))
            XCTAssertEqual(created.status, .created, created.text)
            let carolResponse = try await Self.signIn(client, "carol", "carol's first one")
            let carol = try XCTUnwrap(Self.token(carolResponse))
            let tooShort = try await client.send(.post, "/api/admin/users", key: admin, json: #"{"name":"dave","password":"short"}"#)
            XCTAssertEqual(tooShort.status, .badRequest)
            XCTAssertEqual(tooShort.error["param"] as? String, "password")
            let r8 = try await f.store.user(named: "dave")
            XCTAssertNil(r8, "no user without a valid password")

            let notAdmin = try await client.send(.put, "/api/admin/users/carol/password", key: f.keyA, json: #"{"password":"taken over!"}"#)
            XCTAssertEqual(notAdmin.status, .forbidden)
            let missing = try await client.send(.put, "/api/admin/users/nobody/password", key: admin, json: #"{"password":"whatever it is"}"#)
            XCTAssertEqual(missing.status, .notFound)
            let reset = try await client.send(.put, "/api/admin/users/carol/password", key: admin, json: #"{"password":"reset by admin"}"#)
            XCTAssertEqual(reset.status, .ok, reset.text)
            let r9 = try await Self.send(client, .get, "/api/me", cookie: carol)
            XCTAssertEqual(r9.status, .unauthorized, "her sessions end")
            let r10 = try await Self.signIn(client, "carol", "carol's first one")
            XCTAssertEqual(r10.status, .unauthorized)
            let r11 = try await Self.signIn(client, "carol", "reset by admin")
            XCTAssertEqual(r11.status, .ok)
        }
    }

    func testFailedSignInsAreLimitedPerAccount() async throws {
        let f = try await Self.fixture()
        try await f.test { client in
            for attempt in 1...5 {
                let r = try await Self.signIn(client, "alice", "guess number \(attempt)")
                XCTAssertEqual(r.status, .unauthorized, "attempt \(attempt)")
            }
            let limited = try await Self.signIn(client, "alice", Self.password)
            XCTAssertEqual(limited.status, .tooManyRequests, "even the right password waits: \(limited.text)")
            let retryAfter = try XCTUnwrap(Int(limited.headers[.retryAfter] ?? ""))
            XCTAssertTrue((890...900).contains(retryAfter), "15 minutes from the first failure: \(retryAfter)")
            XCTAssertEqual(limited.error["type"] as? String, "rate_limit_error")
            XCTAssertEqual(limited.error["code"] as? String, "too_many_sign_in_failures")
            XCTAssertNil(limited.headers[.setCookie])
            _ = try await f.service.accounts.setPassword(userName: "bob", password: Self.password)
            let r12 = try await Self.signIn(client, "bob", Self.password)
            XCTAssertEqual(r12.status, .ok, "other accounts are not limited")
        }
    }

    func testTheLimitLiftsWhenTheWindowPassesAndCountsAddresses() async throws {
        let limiter = SignInLimiter(
            perAccount: .init(limit: 2, window: .milliseconds(600)), perAddress: .init(limit: 3, window: .milliseconds(600)))
        for _ in 0..<2 { await limiter.recordFailure(account: "Alice", address: nil) }
        let wait = await limiter.retryAfter(account: "alice", address: nil)
        XCTAssertEqual(wait, 1, "names are counted case-insensitively; whole seconds, rounded up")
        try await Task.sleep(for: .milliseconds(700))
        let lifted = await limiter.retryAfter(account: "alice", address: nil)
        XCTAssertNil(lifted)
        for name in ["a", "b", "c"] { await limiter.recordFailure(account: name, address: "192.0.2.7") }
        let byAddress = await limiter.retryAfter(account: "d", address: "192.0.2.7")
        XCTAssertNotNil(byAddress, "a new name from the same address is refused")
        let otherAddress = await limiter.retryAfter(account: "d", address: "192.0.2.8")
        XCTAssertNil(otherAddress)
    }

    func testSessionsExpire() async throws {
        var configuration = ServerFixture.fastConfiguration
        configuration.sessionLifetime = .seconds(1)
        configuration.secureCookies = true
        let f = try await Self.fixture(configuration: configuration)
        try await f.test { client in
            let r = try await Self.signIn(client, "alice", Self.password)
            XCTAssertTrue(r.headers[.setCookie]?.hasSuffix("; Secure") ?? false, "Secure when the server speaks TLS")
            let token = try XCTUnwrap(Self.token(r))
            let r13 = try await Self.send(client, .get, "/api/me", cookie: token)
            XCTAssertEqual(r13.status, .ok)
            try await Task.sleep(for: .milliseconds(1300))
            let expired = try await Self.send(client, .get, "/api/me", cookie: token)
            XCTAssertEqual(expired.status, .unauthorized)
            XCTAssertEqual(expired.error["code"] as? String, "session_expired")
        }
    }

    func testPasswordsBcryptWouldCutAreRefused() throws {
        XCTAssertThrowsError(try Accounts.validatePassword("seven77"))
        XCTAssertNoThrow(try Accounts.validatePassword("eight888"))
        XCTAssertNoThrow(try Accounts.validatePassword(String(repeating: "x", count: 72)))
        XCTAssertThrowsError(try Accounts.validatePassword(String(repeating: "x", count: 73)), "bcrypt reads 72 bytes only")
        XCTAssertThrowsError(try Accounts.validatePassword(String(repeating: "é", count: 37)), "74 bytes in UTF-8")
        XCTAssertThrowsError(try Accounts.validatePassword("nul\u{0}inside"))
    }
}
