import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Remote providers end to end, with real processes: a second `sarvam serve` (the default model) is
/// the upstream of a first one started with `--upstream local2=URL` and the upstream's key in
/// SARVAM_UPSTREAM_LOCAL2_KEY. The reference for every reply is the upstream's own answer to the
/// same request. A small Python HTTP server stands in for an upstream that stalls.
final class UpstreamServerTests: XCTestCase {
    func testUpstreamModelsRepliesConversationsAndOutage() async throws {
        let model = defaultModelPath()
        guard FileManager.default.fileExists(atPath: model.path) else {
            return XCTFail("\(model.path) is missing: run tools/fetch-model default (tools/test does)")
        }
        let stem = model.deletingPathExtension().lastPathComponent
        let folder = try temporaryFolder()
        let upstreamKey = "sk-sarvam-upstream-\(UUID().uuidString.prefix(12))"
        let frontKey = "sk-sarvam-front-\(UUID().uuidString.prefix(12))"
        let upstream = try ServerProcess(
            arguments: serveArguments(model: model, data: folder.appendingPathComponent("upstream")),
            environment: ["SARVAM_ADMIN_KEY": upstreamKey], logPath: folder.appendingPathComponent("upstream.log").path)
        defer { upstream.stop() }
        try await upstream.waitUntilReady()
        let front = try ServerProcess(
            arguments: serveArguments(model: model, data: folder.appendingPathComponent("front")) + [
                "--upstream", "local2=http://127.0.0.1:\(upstream.port)", "--upstream-refresh", "2",
            ],
            environment: ["SARVAM_ADMIN_KEY": frontKey, "SARVAM_UPSTREAM_LOCAL2_KEY": upstreamKey],
            logPath: folder.appendingPathComponent("front.log").path)
        defer { front.stop() }
        try await front.waitUntilReady()

        // The upstream's models are listed, under its name.
        let remote = "local2/\(stem)"
        let listed = try await waitForModel(remote, port: front.port, key: frontKey)
        XCTAssertEqual(listed["owned_by"] as? String, "local2")

        // Not streamed: the same text as the upstream's own answer at temperature 0.
        let question = "Write a Python function that returns the square of a number."
        func request(_ model: String, stream: Bool) -> String {
            let body: [String: Any] = [
                "model": model, "temperature": 0, "max_tokens": 32, "stream": stream,
                "messages": [["role": "user", "content": question]],
            ]
            return String(decoding: try! JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        }
        let (directStatus, direct) = try await HTTP.request(
            port: upstream.port, "POST", "/v1/chat/completions", key: upstreamKey, json: request(stem, stream: false))
        XCTAssertEqual(directStatus, 200, direct)
        let reference = try XCTUnwrap(Self.replyText(direct), direct)
        XCTAssertFalse(reference.isEmpty)
        let (viaStatus, via) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey, json: request(remote, stream: false))
        XCTAssertEqual(viaStatus, 200, via)
        XCTAssertEqual(Self.replyText(via), reference)
        XCTAssertEqual(Self.object(via)?["model"] as? String, remote)
        let usage = Self.object(via)?["usage"] as? [String: Any]
        XCTAssertEqual(usage?["prompt_tokens"] as? Int, (Self.object(direct)?["usage"] as? [String: Any])?["prompt_tokens"] as? Int)

        // Streamed: the pieces arrive as several chunks and add up to the same text.
        let (streamStatus, streamed) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey, json: request(remote, stream: true))
        XCTAssertEqual(streamStatus, 200)
        let pieces = Self.streamedPieces(streamed)
        XCTAssertGreaterThan(pieces.count, 3, streamed)
        XCTAssertEqual(pieces.joined(), reference)
        XCTAssertTrue(streamed.contains("[DONE]"))

        // A conversation turn through /api: the reply is streamed and stored, complete.
        let (createdStatus, created) = try await HTTP.request(
            port: front.port, "POST", "/api/conversations", key: frontKey,
            json: #"{"model": "\#(remote)", "temperature": 0, "max_tokens": 32}"#)
        XCTAssertEqual(createdStatus, 201, created)
        let id = try XCTUnwrap(Self.object(created)?["id"] as? String, created)
        let (turnStatus, turn) = try await HTTP.request(
            port: front.port, "POST", "/api/conversations/\(id)/messages", key: frontKey, json: #"{"content": "\#(question)"}"#)
        XCTAssertEqual(turnStatus, 200)
        XCTAssertTrue(turn.contains("event: done"), turn)
        XCTAssertEqual(KilledServerTests.deltas(turn).joined(), reference)
        let (_, stored) = try await HTTP.request(port: front.port, "GET", "/api/conversations/\(id)", key: frontKey)
        let messages = try XCTUnwrap(Self.object(stored)?["messages"] as? [[String: Any]], stored)
        XCTAssertEqual(messages.map { $0["role"] as? String }, ["user", "assistant"])
        XCTAssertEqual(messages.last?["content"] as? String, reference)
        XCTAssertEqual(messages.last?["status"] as? String, "complete")
        XCTAssertEqual(messages.last?["model"] as? String, remote)

        // Counted by upstream name; the key is in no log line.
        let (_, metrics) = try await HTTP.request(port: front.port, "GET", "/metrics", key: frontKey)
        let finished = ["stop", "length"].map {
            Self.metric(metrics, #"sarvam_upstream_requests_total{upstream="local2",outcome="\#($0)"}"#)
        }
        XCTAssertEqual(finished.reduce(0, +), 3, metrics)
        XCTAssertGreaterThan(Self.metric(metrics, #"sarvam_upstream_completion_tokens_total{upstream="local2"}"#), 0)
        XCTAssertFalse(front.log.contains(upstreamKey), "the upstream's key is in the log")

        // The upstream goes down: 502 naming it within a few seconds; the local model still answers.
        upstream.killHard()
        let started = ContinuousClock.now
        let (downStatus, down) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey, json: request(remote, stream: false))
        let waited = ContinuousClock.now - started
        XCTAssertEqual(downStatus, 502, down)
        XCTAssertTrue(down.contains("local2") && down.contains("upstream_unavailable"), down)
        XCTAssertLessThan(waited, .seconds(5))
        let (localStatus, local) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey, json: request(stem, stream: false))
        XCTAssertEqual(localStatus, 200, local)
        XCTAssertEqual(Self.object(local)?["model"] as? String, stem)
        XCTAssertFalse((Self.replyText(local) ?? "").isEmpty, local)
        // Once the list cannot be read, a streaming request is refused before its stream starts.
        try await Task.sleep(for: .seconds(1))
        let (streamDownStatus, streamDown) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey, json: request(remote, stream: true))
        XCTAssertEqual(streamDownStatus, 502, streamDown)
        XCTAssertTrue(streamDown.contains("local2"), streamDown)
        let (_, after) = try await HTTP.request(port: front.port, "GET", "/v1/models", key: frontKey)
        XCTAssertFalse(after.contains(remote), after)
        let (_, metricsAfter) = try await HTTP.request(port: front.port, "GET", "/metrics", key: frontKey)
        XCTAssertGreaterThan(Self.metric(metricsAfter, #"sarvam_upstream_errors_total{upstream="local2",kind="unavailable"}"#), 0)
        print("UpstreamServerTests: 502 after the upstream died in \(waited); reply \(reference.debugDescription)")
    }

    /// An upstream that accepts and never answers gets 504 within the first-byte timeout; one that
    /// goes silent mid-reply ends the stream with an error event and the stored reply is marked
    /// error; stop closes the upstream request. The fake upstream records the Authorization headers.
    func testSlowAndStallingUpstreamTimeOut() async throws {
        let model = defaultModelPath()
        guard FileManager.default.fileExists(atPath: model.path) else {
            return XCTFail("\(model.path) is missing: run tools/fetch-model default (tools/test does)")
        }
        let folder = try temporaryFolder()
        let fake = try FakeUpstream(folder: folder)
        defer { fake.stop() }
        let frontKey = "sk-sarvam-front-\(UUID().uuidString.prefix(12))"
        let slowKey = "sk-slow-\(UUID().uuidString.prefix(12))"
        let front = try ServerProcess(
            arguments: serveArguments(model: model, data: folder.appendingPathComponent("front")) + [
                "--upstream", "slow=http://127.0.0.1:\(fake.port)", "--upstream-first-byte-timeout", "2",
                "--upstream-idle-timeout", "2",
            ],
            environment: ["SARVAM_ADMIN_KEY": frontKey, "SARVAM_UPSTREAM_SLOW_KEY": slowKey],
            logPath: folder.appendingPathComponent("front.log").path)
        defer { front.stop() }
        try await front.waitUntilReady()
        _ = try await waitForModel("slow/never", port: front.port, key: frontKey)

        let started = ContinuousClock.now
        let (status, body) = try await HTTP.request(
            port: front.port, "POST", "/v1/chat/completions", key: frontKey,
            json: #"{"model": "slow/never", "messages": [{"role": "user", "content": "hi"}]}"#)
        let waited = ContinuousClock.now - started
        XCTAssertEqual(status, 504, body)
        XCTAssertTrue(body.contains("slow") && body.contains("upstream_timeout"), body)
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(1900))
        XCTAssertLessThan(waited, .seconds(6))

        // Mid-reply silence, through a conversation.
        let (_, created) = try await HTTP.request(
            port: front.port, "POST", "/api/conversations", key: frontKey, json: #"{"model": "slow/stall"}"#)
        let id = try XCTUnwrap(Self.object(created)?["id"] as? String, created)
        let (_, turn) = try await HTTP.request(
            port: front.port, "POST", "/api/conversations/\(id)/messages", key: frontKey, json: #"{"content": "hi"}"#)
        XCTAssertEqual(KilledServerTests.deltas(turn), ["Hello"], turn)
        XCTAssertTrue(turn.contains("event: error") && turn.contains("upstream_timeout"), turn)
        let (_, stored) = try await HTTP.request(port: front.port, "GET", "/api/conversations/\(id)", key: frontKey)
        let reply = try XCTUnwrap((Self.object(stored)?["messages"] as? [[String: Any]])?.last, stored)
        XCTAssertEqual(reply["status"] as? String, "error")
        XCTAssertEqual(reply["content"] as? String, "Hello")

        // Stop while the upstream streams (pings only): the reply is stored as stopped and the upstream
        // sees its connection closed.
        let (_, second) = try await HTTP.request(
            port: front.port, "POST", "/api/conversations", key: frontKey, json: #"{"model": "slow/pinger"}"#)
        let secondId = try XCTUnwrap(Self.object(second)?["id"] as? String, second)
        async let stopped = HTTP.request(
            port: front.port, "POST", "/api/conversations/\(secondId)/messages", key: frontKey, json: #"{"content": "hi"}"#)
        try await fake.waitFor("pinger started")
        let (stopStatus, stopBody) = try await HTTP.request(port: front.port, "POST", "/api/conversations/\(secondId)/stop", key: frontKey)
        XCTAssertEqual(stopStatus, 200, stopBody)
        let stoppedTurn = (try await stopped).1
        XCTAssertEqual(KilledServerTests.deltas(stoppedTurn), ["Hello"], stoppedTurn)
        XCTAssertTrue(stoppedTurn.contains("event: done"), stoppedTurn)
        try await fake.waitFor("pinger closed")
        let (_, stoppedStored) = try await HTTP.request(port: front.port, "GET", "/api/conversations/\(secondId)", key: frontKey)
        let stoppedReply = try XCTUnwrap((Self.object(stoppedStored)?["messages"] as? [[String: Any]])?.last, stoppedStored)
        XCTAssertEqual(stoppedReply["status"] as? String, "stopped")
        XCTAssertEqual(stoppedReply["content"] as? String, "Hello")

        let headers = fake.authorizations
        XCTAssertFalse(headers.isEmpty)
        XCTAssertTrue(headers.allSatisfy { $0 == "Bearer \(slowKey)" }, "\(headers)")
        XCTAssertFalse(front.log.contains(slowKey), "the upstream's key is in the log")
        print("UpstreamServerTests: 504 after \(waited) with a 2 s first-byte timeout")
    }

    // MARK: Helpers

    func serveArguments(model: URL, data: URL) -> [String] {
        [
            "--model", model.path, "--data-dir", data.path, "--context", "1024", "--threads", "1", "--kv-snapshots", "off",
            "--response-cache", "off",
        ]
    }

    func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-upstream-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("upstream"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("front"), withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    /// Polls the front's `/v1/models` until `id` is listed; its entry.
    func waitForModel(_ id: String, port: Int, key: String) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(20)
        var last = ""
        while ContinuousClock.now < deadline {
            let (_, body) = try await HTTP.request(port: port, "GET", "/v1/models", key: key)
            last = body
            if let entry = (Self.object(body)?["data"] as? [[String: Any]])?.first(where: { $0["id"] as? String == id }) { return entry }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw StringError("\(id) was not listed within 20 s: \(last)")
    }

    static func object(_ body: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
    }

    static func replyText(_ body: String) -> String? {
        ((object(body)?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
    }

    /// The `delta.content` of every chunk of a raw (chunked) chat completion stream.
    static func streamedPieces(_ raw: String) -> [String] {
        raw.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("data: {") else { return nil }
            let chunk = object(String(line.dropFirst(6)))
            let delta = (chunk?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
            guard let text = delta?["content"] as? String, !text.isEmpty else { return nil }
            return text
        }
    }

    /// The value of one sample line of Prometheus text (0 when absent).
    static func metric(_ text: String, _ sample: String) -> Double {
        for line in text.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.dropFirst(sample.count + 1)) ?? 0
        }
        return 0
    }
}

/// A Python HTTP server on a free loopback port posing as an upstream: it lists the models `never`
/// (a chat request is read and never answered), `stall` (a reply starts, sends "Hello", then goes
/// silent) and `pinger` (sends "Hello", then SSE comments until the connection is closed, which it
/// notes), and appends each request's Authorization header to a file.
final class FakeUpstream {
    let pid: pid_t
    let port: Int
    private let seenPath: String

    static let script = #"""
        import http.server, json, sys, time
        seen = sys.argv[1]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args): pass
            def record(self):
                with open(seen, "a") as f:
                    f.write((self.headers.get("Authorization") or "none") + "\n")
            def do_GET(self):
                self.record()
                body = json.dumps({"object": "list", "data": [{"id": "never"}, {"id": "stall"}, {"id": "pinger"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def do_POST(self):
                self.record()
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if request.get("model") in ("stall", "pinger"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for delta in [{"role": "assistant", "content": ""}, {"content": "Hello"}]:
                        choice = {"index": 0, "delta": delta, "finish_reason": None}
                        chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [choice]}
                        data = ("data: " + json.dumps(chunk) + "\n\n").encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                if request.get("model") == "pinger":
                    with open(seen, "a") as f:
                        f.write("pinger started\n")
                    try:
                        while True:
                            time.sleep(0.2)
                            self.wfile.write(b"8\r\n: ping\n\n\r\n")
                            self.wfile.flush()
                    except OSError:
                        with open(seen, "a") as f:
                            f.write("pinger closed\n")
                        return
                time.sleep(300)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        print("port", server.server_address[1], flush=True)
        server.serve_forever()
        """#

    init(folder: URL) throws {
        let python = "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python) else { throw XCTSkip("no \(python) for the fake upstream") }
        let scriptPath = folder.appendingPathComponent("fake_upstream.py").path
        try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        seenPath = folder.appendingPathComponent("authorizations.txt").path
        let log = folder.appendingPathComponent("fake.log").path
        pid = try Spawn.start(python, [scriptPath, seenPath], environment: ProcessInfo.processInfo.environment, log: log)
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let range = text.range(of: "port "), let port = Int(text[range.upperBound...].prefix { $0.isNumber }) {
                self.port = port
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        kill(pid, SIGKILL)
        Spawn.wait(pid)
        throw StringError("the fake upstream did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// The Authorization headers of the requests so far.
    var authorizations: [String] { lines.filter { !$0.hasPrefix("pinger ") } }

    private var lines: [String] {
        ((try? String(contentsOfFile: seenPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Waits up to 5 s for the server to note `line` ("pinger started", "pinger closed").
    func waitFor(_ line: String) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            if lines.contains(line) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw StringError("the fake upstream did not note '\(line)' within 5 s: \(lines)")
    }

    func stop() {
        kill(pid, SIGKILL)
        Spawn.wait(pid)
    }
}
