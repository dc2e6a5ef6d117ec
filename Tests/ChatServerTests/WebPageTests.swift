import ChatServer
import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest

/// The page (`Sources/ChatServer/Web`) as the server sends it: self-contained, text never parsed as
/// HTML, correct types, revalidated caching.
final class WebPageTests: XCTestCase {
    static let files: [(path: String, contentType: String)] = [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ]

    /// The three files by path, fetched without a key (the page asks for one itself).
    static func fetchPage(_ client: some TestClientProtocol) async throws -> [String: TestResponse] {
        var responses: [String: TestResponse] = [:]
        for (path, _) in Self.files { responses[path] = try await client.execute(uri: path, method: .get) }
        return responses
    }

    func testPageIsServedSelfContained() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let responses = try await Self.fetchPage(client)
            for (path, contentType) in Self.files {
                let r = try XCTUnwrap(responses[path])
                XCTAssertEqual(r.status, .ok, path)
                XCTAssertEqual(r.headers[.contentType], contentType, path)
                XCTAssertEqual(r.headers[.xContentTypeOptions], "nosniff", path)
                XCTAssertFalse(r.text.isEmpty, path)
            }
            let html = responses["/"]!.text, js = responses["/app.js"]!.text, css = responses["/app.css"]!.text
            let page = html + js + css
            XCTAssertTrue(html.contains("<title>Sarvam</title>"))
            XCTAssertTrue(html.contains("name=\"viewport\""))
            XCTAssertFalse(page.contains("http://") || page.contains("https://"), "no external resources")
            // The only files the page loads are its own two, by path on this server.
            XCTAssertEqual(Self.attributeValues("src", in: html), ["/app.js"], "no external scripts or images")
            XCTAssertEqual(Self.attributeValues("href", in: html), ["/app.css"])
            XCTAssertFalse(html.contains("style="), "no inline styles: the CSP allows app.css only")
            XCTAssertEqual(html.components(separatedBy: "<script").count - 1, 1, "one script, app.js, nothing inline")
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                XCTAssertFalse(js.contains(sink), "text never goes in as HTML or code: \(sink)")
            }
            XCTAssertTrue(js.contains("textContent"))
            XCTAssertFalse(js.contains("localStorage"), "nothing secret (nor anything else) is kept in localStorage")
        }
    }

    func testContentSecurityPolicyAllowsOnlyThisOrigin() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            let r = try await client.execute(uri: "/", method: .get)
            let policy = try XCTUnwrap(r.headers[.contentSecurityPolicy])
            XCTAssertTrue(policy.contains("default-src 'self'"), policy)
            XCTAssertFalse(policy.contains("unsafe-inline") || policy.contains("unsafe-eval"), policy)
        }
    }

    func testFilesAreRevalidatedWithETags() async throws {
        let f = try await ServerFixture()
        try await f.test { client in
            for (path, _) in Self.files {
                let first = try await client.execute(uri: path, method: .get)
                XCTAssertEqual(first.headers[.cacheControl], "no-cache", path)
                let etag = try XCTUnwrap(first.headers[.eTag], path)
                XCTAssertTrue(etag.hasPrefix("\"") && etag.hasSuffix("\""), etag)

                var conditional = HTTPFields()
                conditional[.ifNoneMatch] = "\"other\", W/\(etag)"
                let again = try await client.execute(uri: path, method: .get, headers: conditional)
                XCTAssertEqual(again.status, .notModified, path)
                XCTAssertEqual(again.body.readableBytes, 0)
                XCTAssertEqual(again.headers[.eTag], etag)

                conditional[.ifNoneMatch] = "\"other\""
                let changed = try await client.execute(uri: path, method: .get, headers: conditional)
                XCTAssertEqual(changed.status, .ok, path)
                XCTAssertEqual(changed.text, first.text)
            }
            let tags = try await Self.fetchPage(client).values.compactMap { $0.headers[.eTag] }
            XCTAssertEqual(Set(tags).count, 3, "each file has its own validator")
        }
    }

    /// `node --check` on the served app.js: the script at least parses.
    func testScriptParses() async throws {
        guard let node = Self.executable(named: "node") else {
            throw XCTSkip("node is not installed (not on PATH): app.js is not syntax-checked")
        }
        let f = try await ServerFixture()
        let js = try await f.test { client in try await client.execute(uri: "/app.js", method: .get).text }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-app-\(UUID().uuidString).js")
        try js.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }

        let process = Process()
        process.executableURL = node
        process.arguments = ["--check", file.path]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "node --check app.js:\n\(message)")
    }

    static func executable(named name: String) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent(name) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The values of every `name=` attribute in `html`, in order (quoted or not).
    static func attributeValues(_ name: String, in html: String) -> [String] {
        html.components(separatedBy: "\(name)=").dropFirst().map { rest in
            let value = rest.drop { $0 == "\"" || $0 == "'" }
            return String(value.prefix { !"\"' >".contains($0) })
        }
    }
}
