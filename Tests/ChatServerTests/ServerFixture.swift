import Foundation
import Hummingbird
import Logging
import HummingbirdTesting
import XCTest
import ChatServer

/// A server over an in-memory SQLite database (or the store given) with two users (A and B) and a `FakeEngine`.
struct ServerFixture {
    let service: ChatService
    let engine: FakeEngine
    let keyA: String
    let keyB: String

    static let fastConfiguration = ChatServerConfiguration(
        maxBodyBytes: 64 * 1024,
        pingInterval: .milliseconds(40), drainTimeout: .seconds(1),
        replyReserve: 16)

    init(
        engine: FakeEngine = FakeEngine(), configuration: ChatServerConfiguration = ServerFixture.fastConfiguration,
        catalog: EngineCatalog? = nil, store: (any ChatStore)? = nil, quotaDefaults: QuotaLimits = QuotaLimits(),
        signInLimiter: SignInLimiter = SignInLimiter(), tierRouting: TierRouter.Settings = .init()
    ) async throws {
        self.engine = engine
        let store = try store ?? GRDBChatStore(database: ChatDatabase())
        service = ChatService(
            catalog: catalog ?? EngineCatalog(engines: [engine]), store: store,
            configuration: configuration, quotaDefaults: quotaDefaults, tierRouting: tierRouting,
            logger: {
                var l = Logger(label: "test"); l.logLevel = .warning; return l
            }(), signInLimiter: signInLimiter, passwordCost: Self.passwordCost)
        let accounts = Accounts(store: store)
        let a = try await accounts.addUser(name: "alice")
        let b = try await accounts.addUser(name: "bob")
        keyA = try await accounts.issueKey(for: a, key: nil).key
        keyB = try await accounts.issueKey(for: b, key: nil).key
    }

    /// bcrypt's lowest cost: these tests check the logic, not the hash's strength.
    static let passwordCost: UInt8 = 4

    var app: some ApplicationProtocol { buildApplication(service, host: "127.0.0.1", port: 0) }
    var store: any ChatStore { service.store }

    /// Runs `body` with a router-level test client.
    func test<T: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> T) async throws -> T {
        try await app.test(.router, body)
    }
}

func headers(key: String?) -> HTTPFields {
    var h = HTTPFields()
    h[.contentType] = "application/json"
    if let key { h[.authorization] = "Bearer \(key)" }
    return h
}

extension TestClientProtocol {
    /// Sends JSON text (or nothing) with the key; returns the response.
    func send(_ method: HTTPRequest.Method, _ uri: String, key: String?, json: String? = nil) async throws -> TestResponse {
        try await execute(uri: uri, method: method, headers: headers(key: key), body: json.map { ByteBuffer(string: $0) })
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
    var object: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }
    var error: [String: Any] { object["error"] as? [String: Any] ?? [:] }
}

/// One SSE frame: a comment (`: ping`) or an event with data.
struct SSEFrame: Equatable {
    var comment: String?
    var event: String?
    var data: String?
    var json: [String: Any] { data.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: Any] ?? [:] }
    static func == (a: SSEFrame, b: SSEFrame) -> Bool { a.comment == b.comment && a.event == b.event && a.data == b.data }
}

func parseSSE(_ text: String) -> [SSEFrame] {
    text.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { block in
        var frame = SSEFrame()
        for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix(":") {
                frame.comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("event:") {
                frame.event = String(line.dropFirst(6)).trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("data:") {
                frame.data = String(line.dropFirst(5)).trimmingCharacters(in: .whitespaces)
            }
        }
        return frame
    }
}

/// Polls `condition` every 10 ms for up to `timeout` seconds.
func eventually(
    timeout: Double = 5, _ message: String, _ condition: @Sendable () async throws -> Bool,
    file: StaticString = #filePath, line: UInt = #line
) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    XCTFail("timed out waiting: \(message)", file: file, line: line)
}

func jsonString(_ object: Any) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}
