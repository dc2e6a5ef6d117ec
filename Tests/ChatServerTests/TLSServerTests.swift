import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The real `sarvam serve` binary over HTTPS with a CA and a server certificate that `openssl` makes
/// in a temporary folder: a client that trusts the CA gets replies (the Python `openai` client when
/// it is installed, and curl over HTTP/1.1 and HTTP/2); a client that trusts another CA, and a
/// plain-HTTP client, get none. Bad PEM settings stop the server at startup with a message that
/// names them. The keyless metrics listener and the handshake deadline are checked on the same run.
final class TLSServerTests: XCTestCase {
    struct Output {
        var status: Int32
        var text: String
    }

    /// Runs a program to its end (killed after `timeout` seconds); stdout and stderr together.
    @discardableResult
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], in folder: URL? = nil, timeout: Double = 120
    ) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        if let folder { process.currentDirectoryURL = folder }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, text: String(decoding: data, as: UTF8.self))
    }

    static func tool(_ name: String) throws -> String {
        guard let url = WebPageTests.executable(named: name) else {
            throw XCTSkip("\(name) is not installed (tools/install-deps installs it): the TLS test needs it")
        }
        return url.path
    }

    /// The `sarvam` executable built beside this test bundle.
    static func sarvamBinary() throws -> String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var folder = bundle.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = folder.appendingPathComponent("sarvam").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            folder = folder.deletingLastPathComponent()
        }
        throw XCTSkip("no sarvam executable near \(bundle.path): build it with swift build -c release --build-tests")
    }

    /// A CA, a server certificate it signs for localhost and 127.0.0.1, a second CA that signed
    /// nothing, and a key that belongs to no certificate (the recipe in SERVICES.md).
    static func makeCertificates(in folder: URL, openssl: String) throws {
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
                "/CN=sarvam test CA",
            ],
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj",
                "/CN=other CA",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"],
            [
                "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2",
                "-extfile", "ext.cnf",
            ],
            ["genrsa", "-out", "stray.key", "2048"],
        ]
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(
            to: folder.appendingPathComponent("ext.cnf"), atomically: true, encoding: .utf8)
        for step in steps {
            let out = try run(openssl, step, in: folder)
            guard out.status == 0 else { throw XCTSkip("openssl \(step.joined(separator: " ")) failed: \(out.text)") }
        }
    }

    func testBadPEMSettingsStopTheServerAtStartup() throws {
        let openssl = try Self.tool("openssl")
        let sarvam = try Self.sarvamBinary()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.makeCertificates(in: folder, openssl: openssl)
        try "not a certificate\n".write(to: folder.appendingPathComponent("junk.pem"), atomically: true, encoding: .utf8)
        let p = { (name: String) in folder.appendingPathComponent(name).path }
        let cases: [(arguments: [String], environment: [String: String], expected: [String])] = [
            (["--tls-cert", p("missing.pem"), "--tls-key", p("srv.key")], [:], ["--tls-cert", "missing.pem", "cannot read"]),
            (["--tls-cert", p("junk.pem"), "--tls-key", p("srv.key")], [:], ["junk.pem", "PEM certificate"]),
            (["--tls-cert", p("srv.pem"), "--tls-key", p("junk.pem")], [:], ["junk.pem", "private key"]),
            (["--tls-cert", p("srv.pem"), "--tls-key", p("stray.key")], [:], ["stray.key", "does the key belong to the certificate"]),
            (["--tls-cert", p("srv.pem")], [:], ["without --tls-key"]),
            ([], ["SARVAM_TLS_KEY": p("srv.key")], ["SARVAM_TLS_KEY", "without --tls-cert"]),
            (["--metrics-address", "nowhere"], [:], ["--metrics-address", "HOST:PORT"]),
            (["--header-timeout", "0"], [:], ["--header-timeout"]),
            ([], ["SARVAM_MAX_CONNECTIONS": "many"], ["SARVAM_MAX_CONNECTIONS", "integer"]),
        ]
        for c in cases {
            let started = Date()
            let out = try Self.run(
                sarvam, ["serve", "--port", "0", "--data-dir", p("data"), "--model", p("no-model.sarvam")] + c.arguments,
                environment: c.environment, timeout: 60)
            XCTAssertNotEqual(out.status, 0, "\(c.arguments) \(c.environment) started: \(out.text)")
            for piece in c.expected { XCTAssertTrue(out.text.contains(piece), "\(c.arguments): expected '\(piece)' in: \(out.text)") }
            XCTAssertLessThan(Date().timeIntervalSince(started), 30, "refused at startup, before any model loads")
        }
    }

    func testHTTPSWithTheTestCA() async throws {
        let openssl = try Self.tool("openssl")
        let curl = try Self.tool("curl")
        let sarvam = try Self.sarvamBinary()
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
            return
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.makeCertificates(in: folder, openssl: openssl)
        let p = { (name: String) in folder.appendingPathComponent(name).path }

        let port = try freeLoopbackPort()
        let metricsPort = try freeLoopbackPort()
        let key = "sk-tls-test-\(UUID().uuidString.prefix(8))"
        let server = Process()
        server.executableURL = URL(fileURLWithPath: sarvam)
        server.arguments = [
            "serve", "--host", "127.0.0.1", "--port", "\(port)", "--data-dir", p("data"), "--model", model, "--threads", "2",
            "--context", "512", "--max-sequences", "2", "--kv-cache-mb", "32", "--tls-key", p("srv.key"),
            "--metrics-address", "127.0.0.1:\(metricsPort)", "--header-timeout", "2",
        ]
        // The certificate through the environment: flags and variables both reach the same setting.
        server.environment = ProcessInfo.processInfo.environment.merging(
            ["SARVAM_TLS_CERT": p("srv.pem"), "SARVAM_ADMIN_KEY": key, "SARVAM_LOG_LEVEL": "warning"]) { $1 }
        let log = folder.appendingPathComponent("server.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        server.standardOutput = handle
        server.standardError = handle
        try server.run()
        defer { Self.stop(server) }
        let serverLog = { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        // Ready: /health through the CA (the model loads and warms up first).
        let base = "https://127.0.0.1:\(port)"
        let deadline = Date().addingTimeInterval(300)
        var health = Output(status: -1, text: "")
        while Date() < deadline && server.isRunning {
            health = try Self.run(curl, ["-sS", "--max-time", "5", "--cacert", p("ca.pem"), "\(base)/health"])
            if health.text.contains("\"ok\"") { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        XCTAssertTrue(health.text.contains("\"ok\""), "not ready over HTTPS: \(health.text)\n\(serverLog())")
        guard health.text.contains("\"ok\"") else { return }

        // HTTP/2 where the client offers it, HTTP/1.1 where it does not.
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let out = try Self.run(
                curl, ["-sS", flag, "--cacert", p("ca.pem"), "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "\(base)/health"])
            XCTAssertEqual(out.text, "200 \(version)", "curl \(flag)")
        }
        // A chat completion over HTTP/2, streamed, through the CA.
        let stream = try Self.run(
            curl,
            [
                "-sS", "--http2", "--cacert", p("ca.pem"), "-H", "Authorization: Bearer \(key)", "-H", "Content-Type: application/json",
                "-d", #"{"stream":true,"max_tokens":8,"temperature":0,"messages":[{"role":"user","content":"Say hello."}]}"#,
                "\(base)/v1/chat/completions",
            ])
        XCTAssertTrue(stream.text.contains("data: [DONE]"), stream.text)
        XCTAssertTrue(stream.text.contains("chat.completion.chunk"), stream.text)

        // The OpenAI client, verifying the server against the test CA.
        let python = try Self.tool("python3")
        let script = """
            import ssl, sys, openai
            ca, url, key = sys.argv[1], sys.argv[2], sys.argv[3]
            trust = ssl.create_default_context(cafile=ca)
            client = openai.OpenAI(base_url=url, api_key=key, http_client=openai.DefaultHttpxClient(verify=trust), max_retries=0)
            reply = client.chat.completions.create(
                model=client.models.list().data[0].id, max_tokens=8, temperature=0,
                messages=[{"role": "user", "content": "Say hello."}])
            print("REPLY", reply.choices[0].finish_reason, len(reply.choices[0].message.content))
            """
        if try Self.run(python, ["-c", "import openai"]).status == 0 {
            let trusted = try Self.run(python, ["-c", script, p("ca.pem"), "\(base)/v1", key])
            XCTAssertEqual(trusted.status, 0, trusted.text)
            XCTAssertTrue(trusted.text.contains("REPLY "), trusted.text)
            print("TLSServerTests: the openai client over HTTPS: \(trusted.text.trimmingCharacters(in: .whitespacesAndNewlines))")
            let untrusted = try Self.run(python, ["-c", script, p("other-ca.pem"), "\(base)/v1", key])
            XCTAssertNotEqual(untrusted.status, 0, "a client trusting another CA must not connect: \(untrusted.text)")
            XCTAssertTrue(untrusted.text.contains("APIConnectionError"), untrusted.text)
            XCTAssertTrue(untrusted.text.lowercased().contains("certificate verify failed"), untrusted.text)
        } else {
            print("TLSServerTests: the Python openai package is not installed (tools/install-deps installs it); curl alone checks TLS")
        }
        // Another CA, and plain HTTP on the TLS port: no reply.
        let wrongCA = try Self.run(curl, ["-sS", "--cacert", p("other-ca.pem"), "\(base)/health"])
        XCTAssertEqual(wrongCA.status, 60, "curl must refuse the certificate (exit 60): \(wrongCA.text)")
        let plain = try Self.run(
            curl, ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/health"])
        XCTAssertNotEqual(plain.status, 0, "plain HTTP must get no reply: \(plain.text)")
        XCTAssertFalse(plain.text.hasPrefix("200"), plain.text)

        // /metrics: the admin key over HTTPS, no key on the metrics listener.
        let anonymous = try Self.run(curl, ["-s", "--cacert", p("ca.pem"), "-o", "/dev/null", "-w", "%{http_code}", "\(base)/metrics"])
        XCTAssertEqual(anonymous.text, "401")
        let admin = try Self.run(curl, ["-sS", "--cacert", p("ca.pem"), "-H", "Authorization: Bearer \(key)", "\(base)/metrics"])
        XCTAssertTrue(admin.text.contains("sarvam_http_requests_total"), admin.text)
        let scraped = try Self.run(curl, ["-sS", "http://127.0.0.1:\(metricsPort)/metrics"])
        XCTAssertTrue(scraped.text.contains("sarvam_http_requests_total{route=\"/v1/chat/completions\""), scraped.text)

        // A non-streamed reply whose client gives up: the engine counts it cancelled and stops.
        let abandoned = try Self.run(
            curl,
            [
                "-sS", "--max-time", "3", "--cacert", p("ca.pem"), "-H", "Authorization: Bearer \(key)", "-H",
                "Content-Type: application/json", "-d",
                #"{"max_tokens":400,"temperature":0,"messages":[{"role":"user","content":"Write a very long story about a dragon."}]}"#,
                "\(base)/v1/chat/completions",
            ])
        XCTAssertEqual(abandoned.status, 28, "curl should give up after 3 s, before the reply ends: \(abandoned.text)")
        func scrape(_ family: String, _ label: String = "") throws -> Double? {
            let text = try Self.run(curl, ["-sS", "http://127.0.0.1:\(metricsPort)/metrics"]).text
            let line = text.split(separator: "\n").first { $0.hasPrefix(family + "{") && (label.isEmpty || $0.contains(label)) }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        var cancelled: Double?
        for _ in 0..<30 where (cancelled ?? 0) < 1 {
            cancelled = try scrape("sarvam_engine_requests_total", #"outcome="cancelled""#)
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertEqual(cancelled, 1, "the abandoned request is counted cancelled")
        let generated = try XCTUnwrap(try scrape("sarvam_generated_tokens_total"))
        XCTAssertGreaterThan(generated, 0)
        try await Task.sleep(for: .seconds(1))
        XCTAssertEqual(try scrape("sarvam_generated_tokens_total"), generated, "no token is generated after the cancellation")
        XCTAssertEqual(try scrape("sarvam_requests_running"), 0)

        // A connection that never starts its TLS handshake is closed at the header timeout (2 s).
        let silentFor = try await onThread { () -> Double? in
            let c = try RawConnection(port: port)
            return c.secondsUntilClosed(timeout: 8)
        }
        let seconds = try XCTUnwrap(silentFor, "a silent connection must be closed")
        XCTAssertGreaterThan(seconds, 1.5)
        XCTAssertLessThan(seconds, 5)
        XCTAssertTrue(server.isRunning, "the server keeps running: \(serverLog())")
    }

    /// SIGINT (the graceful path), then SIGTERM after 20 s.
    static func stop(_ server: Process) {
        guard server.isRunning else { return }
        server.interrupt()
        let deadline = Date().addingTimeInterval(20)
        while server.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if server.isRunning { server.terminate() }
    }

    /// A port of 127.0.0.1 that was free a moment ago.
    func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
