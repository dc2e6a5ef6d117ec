// Tests of `bench load`'s parsing parts: its command line, HTTP/1.1 and SSE readers, the stream
// checker, and the server process helpers.
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import XCTest
@testable import bench

final class LoadBenchParsingTests: XCTestCase {
    /// `bench load`'s command line through ArgumentParser, as `bench load ...` parses it.
    func testOptions() throws {
        let o = try LoadBench.Options.parse([
            "--levels", "1, 4,8", "--json", "--url", "http://localhost:9000", "--key", "k",
            "--server-arg", "--queue-limit", "--server-arg", "16", "--max-tokens", "32",
        ])
        XCTAssertEqual(o.levels, [1, 4, 8])
        XCTAssertTrue(o.json)
        XCTAssertEqual(o.serverArguments, ["--queue-limit", "16"], "--server-arg takes its value even when it looks like a flag")
        XCTAssertEqual(o.maxTokens, 32)
        XCTAssertEqual(o.turns, 1)
        XCTAssertEqual(o.levels, try LoadBench.Options.parse(["--levels", "1,4,8"]).levels)
        // The defaults: the SLO mix (half pastes, 128 tokens out), its targets, the server's own capacity and queue.
        let defaults = try LoadBench.Options.parse([])
        XCTAssertEqual(defaults.levels, [1, 4, 8, 16, 32])
        XCTAssertNil(defaults.requests)
        XCTAssertEqual(defaults.longEvery, 2)
        XCTAssertEqual(defaults.maxTokens, 128)
        XCTAssertEqual(defaults.slo, LoadBench.SLO(ttft: 2, itl: 0.2, silence: 2))
        XCTAssertNil(defaults.maxSequences, "not passed: the server sizes itself")
        XCTAssertNil(defaults.queueLimit, "not passed: the server's own queue")
        let targets = try LoadBench.Options.parse(["--slo-ttft", "1.5", "--slo-itl", "0.1", "--slo-silence", "3"])
        XCTAssertEqual(targets.slo, LoadBench.SLO(ttft: 1.5, itl: 0.1, silence: 3))
        XCTAssertEqual(try LoadBench.Options.parse(["--turns", "3"]).turns, 3)
        XCTAssertEqual(try LoadBench.Options.parse(["--queue-limit", "0"]).queueLimit, 0)
        XCTAssertEqual(try LoadBench.Options.parse(["--model-name", "m", "--long-every", "2", "--seconds", "1.5"]).seconds, 1.5)
        // Through the command itself: the subcommand name selects these options.
        let command = try XCTUnwrap(try Bench.parseAsRoot(["load", "--turns", "2", "--max-sequences", "4"]) as? Bench.Load)
        XCTAssertEqual(command.options.turns, 2)
        XCTAssertEqual(command.options.maxSequences, 4)
    }

    /// Bad values are refused with a message that names the flag and what it expects.
    func testBadOptionsSayWhatIsWrong() {
        func message(_ arguments: [String]) -> String {
            do {
                _ = try LoadBench.Options.parse(arguments)
                return "parsed"
            } catch {
                XCTAssertEqual(LoadBench.Options.exitCode(for: error), .validationFailure, "\(arguments)")
                return LoadBench.Options.message(for: error)
            }
        }
        let cases: [([String], String)] = [
            (["--turns", "0"], "--turns: expected a positive integer, found 0"),
            (["--requests", "-2"], "--requests: expected a positive integer, found -2"),
            (["--queue-limit", "-1"], "--queue-limit: expected an integer >= 0, found -1"),
            (["--seconds", "0"], "--seconds: expected a positive number"),
            (["--slo-ttft", "0"], "--slo-ttft: expected a positive number of seconds, found 0.0"),
            (["--slo-itl", "-0.2"], "--slo-itl: expected a positive number of seconds, found -0.2"),
            (["--slo-silence", "nan"], "--slo-silence: expected a positive number of seconds"),
            (["--slo-ttft", "soon"], "soon"),
            (["--max-sequences", "0"], "--max-sequences: expected a positive integer, found 0"),
            (["--url", "http://127.0.0.1:1"], "--url needs --key"),
            (["--levels", "1,x"], "expected positive integers separated by commas"),
            (["--levels", "0"], "expected positive integers separated by commas"),
            (["--max-tokens", "many"], "many"),
            (["--no-such-flag"], "--no-such-flag"),
            (["--key"], "--key"),
        ]
        for (arguments, expected) in cases {
            let text = message(arguments)
            XCTAssertTrue(text.contains(expected), "\(arguments): \(text)")
        }
        XCTAssertEqual(try LoadBench.parseLoopbackURL("http://127.0.0.1:8080/").port, 8080)
        XCTAssertThrowsError(try LoadBench.parseLoopbackURL("http://example.com:80"), "only loopback")
    }

    func testPercentilesAreNearestRank() {
        let values = (1...100).map(Double.init).shuffled()
        XCTAssertEqual(LoadBench.percentile(values, 0.5), 50)
        XCTAssertEqual(LoadBench.percentile(values, 0.95), 95)
        XCTAssertEqual(LoadBench.percentile(values, 0.99), 99)
        XCTAssertEqual(LoadBench.percentile([7], 0.99), 7)
        XCTAssertEqual(LoadBench.percentile([], 0.5), 0)
    }

    func testChunkedResponseSplitAnywhere() throws {
        let body = "data: {\"a\":1}\n\n: ping\n\ndata: [DONE]\n\n"
        let chunks = ["data: {\"a\":1}\n\n", ": ping\n\n", "data: [DONE]\n\n"]
        var raw = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        for c in chunks { raw += String(c.utf8.count, radix: 16) + "\r\n" + c + "\r\n" }
        raw += "0\r\n\r\n"
        let bytes = Array(raw.utf8)
        for split in [1, 3, 7, 64, bytes.count] {
            var reader = HTTPResponseReader()
            var out: [UInt8] = []
            var i = 0
            while i < bytes.count {
                out += try reader.feed(bytes[i..<min(bytes.count, i + split)])
                i += split
            }
            XCTAssertTrue(reader.isComplete, "split \(split)")
            XCTAssertEqual(reader.head?.status, 200)
            XCTAssertEqual(reader.head?.headers["content-type"], "text/event-stream")
            XCTAssertEqual(String(decoding: out, as: UTF8.self), body, "split \(split)")
        }
    }

    func testContentLengthAnd429() throws {
        var reader = HTTPResponseReader()
        let raw = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 5\r\n\r\nbusy!extra"
        let out = try reader.feed(Array(raw.utf8))
        XCTAssertEqual(reader.head, HTTPResponseReader.Head(status: 429, headers: ["retry-after": "3", "content-length": "5"]))
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "busy!")
        XCTAssertTrue(reader.isComplete)
        var bad = HTTPResponseReader()
        XCTAssertThrowsError(try bad.feed(Array("SPDY nonsense\r\n\r\n".utf8)))
    }

    func testSSEEventsAcrossFeeds() {
        var parser = SSEParser()
        var events: [SSEParser.Event] = []
        for piece in ["data: {\"x\"", ":1}\r\n\r\n: pi", "ng\n\ndata: a\ndata: b\n", "\n"] {
            events += parser.feed(Array(piece.utf8))
        }
        XCTAssertEqual(events, [.data("{\"x\":1}"), .comment("ping"), .data("a\nb")])
    }

    private func chunk(
        _ id: String, role: Bool = false, content: String? = nil, finish: String? = nil, usage: Int? = nil
    ) -> SSEParser.Event {
        var delta: [String: Any] = [:]
        if role { delta["role"] = "assistant" }
        if let content { delta["content"] = content }
        var choice: [String: Any] = ["index": 0, "delta": delta]
        choice["finish_reason"] = finish ?? NSNull()
        var object: [String: Any] = ["id": id, "object": "chat.completion.chunk", "choices": usage == nil ? [choice] : []]
        if let usage {
            object["usage"] = [
                "prompt_tokens": 5, "completion_tokens": usage, "total_tokens": 5 + usage,
                "prompt_tokens_details": ["cached_tokens": 3],
            ]
        }
        return .data(String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }

    func testWellFormedStreamIsAccepted() throws {
        var check = ChatStreamChecker()
        XCTAssertFalse(try check.accept(.comment("ping")))
        XCTAssertFalse(try check.accept(chunk("c1", role: true, content: "")))
        XCTAssertTrue(try check.accept(chunk("c1", content: "Hel")))
        XCTAssertTrue(try check.accept(chunk("c1", content: "lo")))
        XCTAssertFalse(try check.accept(chunk("c1", finish: "stop")))
        XCTAssertFalse(try check.accept(chunk("c1", usage: 2)))
        XCTAssertFalse(try check.accept(.data("[DONE]")))
        XCTAssertNoThrow(try check.finish())
        XCTAssertEqual(check.completionTokens, 2)
        XCTAssertEqual(check.promptTokens, 5)
        XCTAssertEqual(check.text, "Hello", "the reply a later turn resends")
        XCTAssertEqual(check.cachedPromptTokens, 3)
    }

    func testBrokenStreamsAreRejected() throws {
        var noDone = ChatStreamChecker()
        _ = try noDone.accept(chunk("c1", role: true, content: "x"))
        _ = try noDone.accept(chunk("c1", finish: "length"))
        _ = try noDone.accept(chunk("c1", usage: 1))
        XCTAssertThrowsError(try noDone.finish())

        var mixedIds = ChatStreamChecker()
        _ = try mixedIds.accept(chunk("c1", role: true))
        XCTAssertThrowsError(try mixedIds.accept(chunk("c2", content: "x")))

        var noRole = ChatStreamChecker()
        XCTAssertThrowsError(try noRole.accept(chunk("c1", content: "x")))

        var garbage = ChatStreamChecker()
        XCTAssertThrowsError(try garbage.accept(.data("{not json")))
        XCTAssertThrowsError(try garbage.accept(.data("{\"error\": {\"message\": \"boom\"}}")))
    }

    func testJSONLineHasTheIssueKeys() throws {
        var r = LoadBench.LevelResult()
        r.concurrency = 8
        r.ok = 10
        r.completionTokens = 640
        r.seconds = 32
        r.peakRSS = 123
        r.shortCount = 5
        r.shortTTFT.p95 = 0.5
        r.longCount = 5
        r.longTTFT.p50 = 3
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.jsonLine(slo: LoadBench.SLO()).utf8)) as? [String: Any])
        for key in [
            "concurrency", "ok", "failed", "rejected_429", "tokens_per_s", "ttft_p50_s", "ttft_p95_s", "itl_p95_s",
            "max_gap_s", "peak_rss_bytes", "rejected_429_max_s", "prompt_tokens", "prompt_tokens_per_s",
            "short_ttft_p50_s", "short_ttft_p95_s", "long_ttft_p50_s", "long_ttft_p95_s", "slo_ok", "slo_failed",
        ] {
            XCTAssertNotNil(object[key], key)
        }
        XCTAssertEqual(object["tokens_per_s"] as? Double, 20)
        XCTAssertEqual(object["short_ttft_p95_s"] as? Double, 0.5)
        XCTAssertEqual(object["long_ttft_p50_s"] as? Double, 3)
        XCTAssertEqual(object["slo_ok"] as? Bool, true)
        XCTAssertEqual(object["slo_failed"] as? [String], [])
    }

    func testPromptsHaveTheIntendedSizes() {
        // ~4 characters per token for English and code.
        XCTAssertLessThan(Prompts.make(long: false, seed: 1).count, 160)
        let long = Prompts.make(long: true, seed: 1)
        // ~1,000 tokens of code (~3 characters per token), not 1,700 as when it had 60 lines.
        XCTAssertGreaterThan(long.count, 2500)
        XCTAssertLessThan(long.count, 3600)
        XCTAssertNotEqual(Prompts.make(long: true, seed: 1), Prompts.make(long: true, seed: 2))
    }

    /// Capacity and queue reach the server only when given; the bench's SLO options never do, --server-arg always.
    func testServerArguments() throws {
        func arguments(_ options: [String]) throws -> [String] {
            ServerProcess.arguments(port: 9, dataDirectory: "/d", model: "m.sarvam", options: try LoadBench.Options.parse(options))
        }
        XCTAssertEqual(
            try arguments([]),
            [
                "serve", "--host", "127.0.0.1", "--port", "9", "--data-dir", "/d", "--model", "m.sarvam",
                "--threads", "2",
            ])
        let given = try arguments([
            "--max-sequences", "4", "--queue-limit", "0", "--slo-ttft", "1",
            "--server-arg", "--slo-itl", "--server-arg", "0.1",
        ])
        XCTAssertEqual(Array(given.suffix(6)), ["--max-sequences", "4", "--queue-limit", "0", "--slo-itl", "0.1"])
        XCTAssertFalse(given.contains("--slo-ttft"), "the bench's targets judge the results; they are not the server's")
    }

    func testFreePortAndProcParsing() throws {
        let port = try ServerProcess.freeLoopbackPort()
        XCTAssertTrue((1024...65535).contains(port), "\(port)")
        XCTAssertEqual(MemoryProbe.kilobytes("VmHWM:\t 10 kB\nVmRSS:\t  2048 kB\n", field: "VmRSS"), 2048 * 1024)
        XCTAssertEqual(
            MemoryProbe.metric(
                "# TYPE x gauge\nsarvam_process_resident_memory_bytes 4096.0\n", name: "sarvam_process_resident_memory_bytes"), 4096)
    }

    /// A 429 counts as rejected only with a Retry-After header, and the time it took is kept.
    func test429NeedsRetryAfter() throws {
        let with = try OneShotServer(
            response: "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy")
        let rejected = LoadClient(host: "127.0.0.1", port: with.port, key: "k").streamChat(body: Data("{}".utf8), timeout: 5)
        XCTAssertEqual(rejected.status, .rejected(retryAfter: 2))
        XCTAssertGreaterThan(rejected.seconds, 0)
        XCTAssertLessThan(rejected.seconds, 5)

        let without = try OneShotServer(response: "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy")
        let failed = LoadClient(host: "127.0.0.1", port: without.port, key: "k").streamChat(body: Data("{}".utf8), timeout: 5)
        guard case .failed(let message) = failed.status else { return XCTFail("expected failed, got \(failed.status)") }
        XCTAssertTrue(message.contains("Retry-After"), message)
    }
}

/// Accepts one loopback connection on a thread, reads the request head and body, writes `response`, closes.
final class OneShotServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32

    init(response: String) throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        fd = listener
        guard let bound = ServerProcess.bindLoopback(listener), listen(listener, 1) == 0 else {
            close(listener)
            throw LoadBench.BenchError("test server: bind/listen failed, errno \(errno)")
        }
        port = bound
        Thread {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            var request: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            // The whole request: head, then Content-Length bytes of body.
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { break }
                request += buffer[0..<n]
                if let end = HTTPResponseReader.find([13, 10, 13, 10], in: request) {
                    let head = String(decoding: request[..<end], as: UTF8.self).lowercased()
                    let length =
                        head.components(separatedBy: "\r\n").first { $0.hasPrefix("content-length:") }
                        .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                    if request.count >= end + 4 + length { break }
                }
            }
            let bytes = Array(response.utf8)
            _ = bytes.withUnsafeBytes { send(client, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            close(client)
        }.start()
    }

    deinit { close(fd) }
}
