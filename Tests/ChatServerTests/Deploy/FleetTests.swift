// The fleet end to end, with real processes on loopback started and stopped by `tools/fleet`:
// PostgreSQL, two `sarvam serve --store postgres://` instances with the real default model, nginx
// in front and Prometheus scraping them. Requests go through nginx with curl, as a client would.
import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class FleetTests: XCTestCase {
    /// A folder and a nginx port whose derived ports (instances +1, +2, PostgreSQL +100,
    /// Prometheus +200) are free.
    struct Fleet {
        let dir: URL
        let port: Int
        var key: String
        var prometheusPort: Int { port + 200 }
        func instancePort(_ i: Int) -> Int { port + i }
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let (status, output) = try Spawn.run(repositoryRoot().appendingPathComponent("tools/fleet").path, arguments)
        return (status, output)
    }

    static func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// curl with the key; returns the HTTP status and the body (`-N`: streams as they come).
    static func curl(_ url: String, key: String?, method: String = "GET", json: String? = nil, headers: [String] = [], maxTime: Int = 120)
        throws -> (status: Int, body: String)
    {
        var arguments = ["-sS", "-N", "--max-time", "\(maxTime)", "-X", method, "-w", "\n%{http_code}", url]
        if let key { arguments += ["-H", "Authorization: Bearer \(key)"] }
        if let json { arguments += ["-H", "Content-Type: application/json", "--data-binary", json] }
        for h in headers { arguments += ["-H", h] }
        let (_, text) = try Spawn.run("/usr/bin/curl", arguments)
        let status = Int(text.split(separator: "\n").last ?? "") ?? 0
        return (status, String(text.dropLast(String(status).count)).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Replies running on instance `i` (its /metrics, with the admin key).
    static func running(_ fleet: Fleet, _ i: Int) throws -> Int {
        let metrics = try curl("http://127.0.0.1:\(fleet.instancePort(i))/metrics", key: fleet.key, maxTime: 5).body
        return metrics.split(separator: "\n").filter { $0.hasPrefix("sarvam_requests_running{") }
            .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0) { $0 + Int($1) }
    }

    static func object(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// Instance pids from `tools/fleet status --json`, by instance number.
    static func pids(_ fleet: Fleet) throws -> [Int: Int32] {
        let (_, output) = try run(["status", "--json", "--dir", fleet.dir.path, "--port", "\(fleet.port)"])
        let line = output.split(separator: "\n").last.map(String.init) ?? ""
        var result: [Int: Int32] = [:]
        for instance in object(line)["instances"] as? [[String: Any]] ?? [] {
            if let i = instance["instance"] as? Int, let pid = instance["pid"] as? Int, pid > 0 { result[i] = Int32(pid) }
        }
        return result
    }

    /// The instance (1 or 2) that served the last request nginx logged for `pathPart`.
    /// The instance (1 or 2) that answered the `request`-th request (1-based) whose path holds
    /// `pathPart`, from nginx's access log. nginx writes the line when it has finished the request,
    /// which can be just after the client has the whole reply: the log is read again for up to 3 s
    /// until that line is there.
    static func servedBy(_ fleet: Fleet, pathPart: String, request: Int) throws -> Int? {
        var lines: [Substring] = []
        let deadline = Date().addingTimeInterval(3)
        repeat {
            let log = try String(contentsOf: fleet.dir.appendingPathComponent("nginx/access.log"), encoding: .utf8)
            lines = log.split(separator: "\n").filter { $0.contains(pathPart) }
            if lines.count >= request { break }
            Thread.sleep(forTimeInterval: 0.05)
        } while Date() < deadline
        guard lines.count >= request else { return nil }
        let line = lines[request - 1]
        for i in 1...2 where line.contains("upstream=127.0.0.1:\(fleet.instancePort(i))") && !line.contains(", ") { return i }
        // A failover logs "first, second": the instance that answered is the last one.
        for i in 1...2 where line.contains("127.0.0.1:\(fleet.instancePort(i)) upstream_status") { return i }
        return nil
    }

    func testTwoInstancesBehindNginxServeOneConversationAndSurviveKills() throws {
        let model = defaultModelPath().path
        guard FileManager.default.fileExists(atPath: model) else {
            XCTFail("\(model) is missing: run tools/fetch-model default (tools/test does)")
            return
        }
        for tool in ["/usr/sbin/nginx", "/usr/bin/prometheus", "/usr/bin/curl"] where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("\(tool) is not installed (tools/install-deps installs nginx, prometheus and curl)")
        }
        guard (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?.isEmpty == false else {
            throw XCTSkip("PostgreSQL is not installed (tools/install-deps installs postgresql)")
        }
        var port = 0
        for candidate in stride(from: 30000 + Int.random(in: 0..<200) * 50, to: 60000, by: 50) {
            if [0, 1, 2, 100, 200].allSatisfy({ Self.portIsFree(candidate + $0) }) {
                port = candidate
                break
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        chmod(dir.path, 0o755)
        defer {
            let (status, output) = (try? Self.run(["down", "--dir", dir.path])) ?? (1, "tools/fleet down did not run")
            XCTAssertEqual(status, 0, output)
            try? FileManager.default.removeItem(at: dir)
        }
        let (upStatus, upOutput) = try Self.run(
            ["up", "--instances", "2", "--port", "\(port)", "--dir", dir.path, "--threads", "1", "--model", model])
        XCTAssertEqual(upStatus, 0, upOutput)
        guard upStatus == 0 else { return }
        XCTAssertTrue(upOutput.contains("Admin API key (shown once"), upOutput)
        var fleet = Fleet(dir: dir, port: port, key: try String(contentsOf: dir.appendingPathComponent("admin.key"), encoding: .utf8))
        let nginx = "http://127.0.0.1:\(port)"
        let status = try Self.run(["status", "--json", "--dir", dir.path])
        XCTAssertEqual(status.status, 0, status.output)
        XCTAssertEqual(try Self.pids(fleet).count, 2, status.output)

        // A user and key made through instance 1 work on instance 2 at once.
        let made = try Self.curl(
            "http://127.0.0.1:\(fleet.instancePort(1))/api/admin/users", key: fleet.key, method: "POST", json: #"{"name":"dana"}"#)
        XCTAssertEqual(made.status, 201, made.body)
        let key = try XCTUnwrap(Self.object(made.body)["key"] as? String, made.body)
        let me = try Self.curl("http://127.0.0.1:\(fleet.instancePort(2))/api/me", key: key)
        XCTAssertEqual(me.status, 200, me.body)

        // Three turns of one conversation through nginx: turns 2 and 3 find the history cached on the
        // instance that served turn 1.
        var messages: [[String: String]] = [["role": "user", "content": "Write a Swift function that adds two integers."]]
        for turn in 1...3 {
            let body = try JSONSerialization.data(withJSONObject: ["messages": messages, "max_tokens": 24, "temperature": 0])
            let reply = try Self.curl(
                "\(nginx)/v1/chat/completions", key: key, method: "POST", json: String(decoding: body, as: UTF8.self),
                headers: ["X-Conversation-Id: fleet-test-1"])
            XCTAssertEqual(reply.status, 200, reply.body)
            let json = Self.object(reply.body)
            let content = ((json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String ?? ""
            let cached = ((json["usage"] as? [String: Any])?["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
            if turn > 1 { XCTAssertGreaterThan(cached, 0, "turn \(turn) reached the instance holding the history: \(reply.body)") }
            messages.append(["role": "assistant", "content": content])
            messages.append(["role": "user", "content": turn == 1 ? "Now make it generic." : "Add a doc comment."])
        }

        // The conversation API: a turn, then kill -9 of the instance that served it; the next turn
        // through nginx goes to the other one and sees the whole history from PostgreSQL.
        let created = try Self.curl("\(nginx)/api/conversations", key: key, method: "POST", json: #"{"temperature":0,"max_tokens":16}"#)
        XCTAssertEqual(created.status, 201, created.body)
        let id = try XCTUnwrap(Self.object(created.body)["id"] as? String, created.body)
        let first = try Self.curl("\(nginx)/api/conversations/\(id)/messages", key: key, method: "POST", json: #"{"content":"Say hello."}"#)
        XCTAssertEqual(first.status, 200)
        XCTAssertTrue(first.body.contains("event: done"), first.body)
        let serving = try XCTUnwrap(
            try Self.servedBy(fleet, pathPart: "/api/conversations/\(id)/messages", request: 1), "nginx logged no upstream")
        let pids = try Self.pids(fleet)
        kill(try XCTUnwrap(pids[serving]), SIGKILL)
        let start = Date()
        let second = try Self.curl(
            "\(nginx)/api/conversations/\(id)/messages", key: key, method: "POST", json: #"{"content":"Say goodbye."}"#, maxTime: 30)
        XCTAssertEqual(second.status, 200, second.body)
        XCTAssertTrue(second.body.contains("event: done"), second.body)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5, "the turn after a kill -9 completes within 5 s")
        XCTAssertEqual(try Self.servedBy(fleet, pathPart: "/api/conversations/\(id)/messages", request: 2), 3 - serving)
        let history = try Self.curl("\(nginx)/api/conversations/\(id)", key: key)
        let stored = Self.object(history.body)["messages"] as? [[String: Any]] ?? []
        XCTAssertEqual(stored.map { $0["role"] as? String ?? "" }, ["user", "assistant", "user", "assistant"], history.body)

        // `up` again restarts the dead instance; Prometheus scrapes both.
        let again = try Self.run(["up", "--instances", "2", "--port", "\(port)", "--dir", dir.path, "--threads", "1", "--model", model])
        XCTAssertEqual(again.status, 0, again.output)
        fleet.key = try String(contentsOf: dir.appendingPathComponent("admin.key"), encoding: .utf8)
        var targets: Set<String> = []
        let deadline = Date().addingTimeInterval(60)
        while targets.count < 2 && Date() < deadline {
            let query = try Self.curl(
                "http://127.0.0.1:\(fleet.prometheusPort)/api/v1/query?query=sarvam_requests_running", key: nil)
            let results = (Self.object(query.body)["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
            targets = Set(results.compactMap { ($0["metric"] as? [String: Any])?["instance"] as? String })
            if targets.count < 2 { Thread.sleep(forTimeInterval: 2) }
        }
        XCTAssertEqual(targets, ["127.0.0.1:\(fleet.instancePort(1))", "127.0.0.1:\(fleet.instancePort(2))"])

        // kill -9 mid-stream: the user message and the reply up to its last write, marked
        // interrupted, are in PostgreSQL (read through the other instance).
        let third = try Self.curl("\(nginx)/api/conversations", key: key, method: "POST", json: #"{"temperature":0,"max_tokens":400}"#)
        let streamed = try XCTUnwrap(Self.object(third.body)["id"] as? String, third.body)
        let writer = Thread {
            _ = try? Self.curl(
                "\(nginx)/api/conversations/\(streamed)/messages", key: key, method: "POST",
                json: #"{"content":"Write a long Swift program that sorts a list of names in five different ways."}"#, maxTime: 60)
        }
        writer.start()
        var victim: Int?
        var partial = ""
        let streamDeadline = Date().addingTimeInterval(60)
        while victim == nil && Date() < streamDeadline {
            Thread.sleep(forTimeInterval: 0.5)
            let now = Self.object(try Self.curl("\(nginx)/api/conversations/\(streamed)", key: key).body)
            let reply = (now["messages"] as? [[String: Any]] ?? []).last { $0["role"] as? String == "assistant" }
            partial = reply?["content"] as? String ?? ""
            if partial.count > 20 { victim = try (1...2).first { try Self.running(fleet, $0) > 0 } }
        }
        let killed = try XCTUnwrap(victim, "no instance was streaming the reply")
        kill(try XCTUnwrap(try Self.pids(fleet)[killed]), SIGKILL)
        Thread.sleep(forTimeInterval: 1)
        let after = Self.object(try Self.curl("\(nginx)/api/conversations/\(streamed)", key: key).body)
        let rows = after["messages"] as? [[String: Any]] ?? []
        XCTAssertEqual(rows.map { $0["role"] as? String ?? "" }, ["user", "assistant"], "\(after)")
        XCTAssertEqual(rows.last?["status"] as? String, "interrupted", "\(after)")
        XCTAssertTrue((rows.last?["content"] as? String ?? "").hasPrefix(partial), "the reply up to its last write")
    }
}
