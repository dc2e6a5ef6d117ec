import Foundation
import TestSupport
import XCTest

/// Sign-in against the real `sarvam serve` process: the first start's admin password, users made
/// with `sarvam users add --password-stdin` and reset with `sarvam users password` while the server
/// runs, the admin API over a session, the per-account limit, and a log that holds no password and
/// no session token. A second run under TLS checks the cookie's `Secure`. No model is loaded: the
/// account routes answer while the model is missing.
final class SignInProcessTests: XCTestCase {
    struct Reply {
        var status: Int
        var headers: [(name: String, value: String)]
        var body: String
        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
        var token: String? {
            guard let cookie = header("set-cookie"), cookie.hasPrefix("sarvam_session=") else { return nil }
            return String(cookie.dropFirst("sarvam_session=".count).prefix { $0 != ";" })
        }
    }

    /// One HTTP/1.1 request on its own connection; `cookie` is the session token.
    static func call(
        _ port: Int, _ method: String, _ path: String, cookie: String? = nil, csrf: Bool = true, key: String? = nil, json: String? = nil
    ) async throws -> Reply {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let cookie { request += "Cookie: sarvam_session=\(cookie)\r\n" }
        if csrf { request += "X-Sarvam-CSRF: 1\r\n" }
        if let key { request += "Authorization: Bearer \(key)\r\n" }
        request += "Content-Type: application/json\r\nContent-Length: \((json ?? "").utf8.count)\r\n\r\n" + (json ?? "")
        let received = try await LiveServerTests.readThenHangUp(port: port, request: request) { _ in false }
        let (head, body) = received.range(of: "\r\n\r\n").map { (String(received[..<$0.lowerBound]), String(received[$0.upperBound...])) }
            ?? (received, "")
        let lines = head.components(separatedBy: "\r\n")
        let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Reply(status: status, headers: headers, body: body)
    }

    static func signIn(_ port: Int, _ name: String, _ password: String) async throws -> Reply {
        try await call(port, "POST", "/api/session", json: jsonString(["name": name, "password": password]))
    }

    /// `sarvam ARGUMENTS` with `input` on standard input: exit code and output.
    static func sarvam(_ arguments: [String], input: String) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = try ServerProcess.binary()
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SARVAM_") }
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stdout
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let data = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-signin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    func testFirstStartCLIPasswordsLimitsAndALogWithoutSecrets() async throws {
        let folder = try temporaryFolder()
        let data = folder.appendingPathComponent("data").path
        let doraFirst = "dora's first pass phrase", doraSecond = "dora's second pass phrase", frankPassword = "frank's own password"

        let added = try Self.sarvam(["users", "add", "dora", "--password-stdin", "--data-dir", data], input: doraFirst + "\n")
        XCTAssertEqual(added.status, 0, added.output)
        XCTAssertTrue(added.output.contains("with a password"), added.output)
        XCTAssertFalse(added.output.contains(doraFirst))
        let empty = try Self.sarvam(["users", "add", "erin", "--password-stdin", "--data-dir", data], input: "")
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.output.contains("--password-stdin"), empty.output)
        let short = try Self.sarvam(["users", "add", "erin", "--password-stdin", "--data-dir", data], input: "short\n")
        XCTAssertNotEqual(short.status, 0)
        XCTAssertTrue(short.output.contains("8 to 72"), short.output)

        let server = try ServerProcess(
            arguments: ["--data-dir", data, "--model", folder.appendingPathComponent("no-model.sarvam").path],
            environment: ["SARVAM_LOG_LEVEL": "info"], logPath: folder.appendingPathComponent("server.log").path)
        defer { server.stop() }
        let port = server.port

        // The first start printed the admin's password once: a new user of tools/run signs in with it.
        let lines = server.log.components(separatedBy: "\n")
        let said = try XCTUnwrap(lines.firstIndex { $0.contains("Sign in on the page as admin") }, server.log)
        let adminPassword = lines[said + 1].trimmingCharacters(in: .whitespaces)
        XCTAssertEqual(adminPassword.count, 16, server.log)
        let admin = try await Self.signIn(port, "admin", adminPassword)
        XCTAssertEqual(admin.status, 200, admin.body)
        let adminToken = try XCTUnwrap(admin.token)

        let dora = try await Self.signIn(port, "dora", doraFirst)
        XCTAssertEqual(dora.status, 200, dora.body)
        let doraToken = try XCTUnwrap(dora.token)
        let cookie = try XCTUnwrap(dora.header("set-cookie"))
        XCTAssertTrue(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), cookie)
        let me = try await Self.call(port, "GET", "/api/me", cookie: doraToken, csrf: false)
        XCTAssertEqual(me.status, 200, me.body)
        XCTAssertTrue(me.body.contains(#""name":"dora""#), me.body)
        let forged = try await Self.call(
            port, "POST", "/api/me/password", cookie: doraToken, csrf: false,
            json: jsonString(["current_password": doraFirst, "new_password": "taken over by a forged form"]))
        XCTAssertEqual(forged.status, 403, forged.body)

        // The admin API over the admin's session: a user with a password.
        let frank = try await Self.call(
            port, "POST", "/api/admin/users", cookie: adminToken, json: jsonString(["name": "frank", "password": frankPassword]))
        XCTAssertEqual(frank.status, 201, frank.body)
        var frankTokens: [String] = []
        let frankIn = try await Self.signIn(port, "frank", frankPassword)
        frankTokens += [frankIn.token].compactMap { $0 }
        XCTAssertEqual(frankTokens.count, 1, frankIn.body)

        // Five wrong guesses, then 429 with Retry-After, even for the right password.
        for n in 1...5 {
            let r = try await Self.signIn(port, "frank", "wrong guess \(n)")
            XCTAssertEqual(r.status, 401, r.body)
        }
        let limited = try await Self.signIn(port, "frank", frankPassword)
        XCTAssertEqual(limited.status, 429, limited.body)
        let retryAfter = try XCTUnwrap(limited.header("retry-after").flatMap { Int($0) }, "\(limited.headers)")
        XCTAssertTrue((1...900).contains(retryAfter), "\(retryAfter)")
        XCTAssertTrue(limited.body.contains(#""type":"rate_limit_error""#), limited.body)

        // A reset from the command line while the server runs ends dora's sessions at once.
        let reset = try Self.sarvam(["users", "password", "dora", "--password-stdin", "--data-dir", data], input: doraSecond + "\n")
        XCTAssertEqual(reset.status, 0, reset.output)
        let ended = try await Self.call(port, "GET", "/api/me", cookie: doraToken)
        XCTAssertEqual(ended.status, 401, ended.body)
        let old = try await Self.signIn(port, "dora", doraFirst)
        XCTAssertEqual(old.status, 401)
        let again = try await Self.signIn(port, "dora", doraSecond)
        XCTAssertEqual(again.status, 200, again.body)
        let doraAgain = try XCTUnwrap(again.token)

        let out = try await Self.call(port, "DELETE", "/api/session", cookie: adminToken)
        XCTAssertEqual(out.status, 200, out.body)
        let afterOut = try await Self.call(port, "GET", "/api/me", cookie: adminToken)
        XCTAssertEqual(afterOut.status, 401)

        server.stop()
        let log = server.log
        for secret in [doraFirst, doraSecond, frankPassword, "wrong guess", doraToken, doraAgain, adminToken] + frankTokens {
            XCTAssertFalse(log.contains(secret), "the log holds a secret: \(secret.prefix(12))…")
        }
        let failures = log.components(separatedBy: "\n").filter { $0.contains("sign-in failed") }
        XCTAssertGreaterThanOrEqual(failures.count, 6, "each failed sign-in is logged:\n\(log)")
        XCTAssertTrue(failures.contains { $0.contains(#""user_name":"frank""#) && $0.contains(#""client_address":"127.0.0.1""#) }, "\(failures)")
        XCTAssertTrue(log.contains("too many failures"), log)
    }

    func testTheCookieIsSecureUnderTLS() async throws {
        let openssl = try TLSServerTests.tool("openssl")
        let curl = try TLSServerTests.tool("curl")
        let folder = try temporaryFolder()
        try TLSServerTests.makeCertificates(in: folder, openssl: openssl)
        let p = { (name: String) in folder.appendingPathComponent(name).path }
        let password = "the admin's preset password"
        let server = try ServerProcess(
            arguments: ["--data-dir", p("data"), "--model", p("no-model.sarvam"), "--tls-cert", p("srv.pem"), "--tls-key", p("srv.key")],
            environment: ["SARVAM_ADMIN_PASSWORD": password], logPath: p("server.log"))
        defer { server.stop() }
        XCTAssertTrue(server.log.contains("SARVAM_ADMIN_PASSWORD"), server.log)
        XCTAssertFalse(server.log.contains(password), "a preset password is not printed")
        let base = "https://127.0.0.1:\(server.port)"
        let signIn = try TLSServerTests.run(
            curl,
            [
                "-sS", "-i", "--cacert", p("ca.pem"), "-H", "Content-Type: application/json", "-H", "X-Sarvam-CSRF: 1", "-d",
                jsonString(["name": "admin", "password": password]), "\(base)/api/session",
            ])
        let setCookie = try XCTUnwrap(
            signIn.text.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("set-cookie:") }, signIn.text)
        let attributes = Set(setCookie.split(separator: ";").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) })
        XCTAssertTrue(attributes.isSuperset(of: ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"]), setCookie)
        let token = String(setCookie.split(separator: "=", maxSplits: 1)[1].prefix { $0 != ";" })
        let me = try TLSServerTests.run(curl, ["-sS", "--cacert", p("ca.pem"), "-b", "sarvam_session=\(token)", "\(base)/api/me"])
        XCTAssertTrue(me.text.contains(#""name":"admin""#), me.text)
    }
}
