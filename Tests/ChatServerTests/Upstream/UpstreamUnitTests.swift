import Logging
import XCTest

@testable import ChatServer

/// The pieces of the upstream client that need no network: the SSE splitter, `NAME=URL` parsing,
/// and how an upstream's error status reads to our client.
final class UpstreamUnitTests: XCTestCase {
    func testEventParserJoinsPiecesCutAnywhere() {
        let stream = ": ping\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: delta\ndata: one\ndata: two\n\ndata: [DONE]\n\n"
        let expected = ["{\"a\":1}", "one\ntwo", "[DONE]"]
        let bytes = Array(stream.utf8)
        // Every cut point, and one byte at a time.
        for cut in 0...bytes.count {
            var parser = ServerSentEventParser()
            let events = parser.feed(bytes[..<cut]) + parser.feed(bytes[cut...])
            XCTAssertEqual(events, expected, "cut at \(cut)")
        }
        var parser = ServerSentEventParser()
        XCTAssertEqual(bytes.flatMap { parser.feed([$0]) }, expected)
    }

    func testUpstreamSettingParses() throws {
        let a = try UpstreamConfiguration.parse("local2=http://127.0.0.1:8081")
        XCTAssertEqual(a.name, "local2")
        XCTAssertEqual(a.baseURL, "http://127.0.0.1:8081")
        XCTAssertEqual(try UpstreamConfiguration.parse("openai=https://api.openai.com/v1/").baseURL, "https://api.openai.com")
        XCTAssertEqual(UpstreamConfiguration.keyVariable(name: "my-cloud"), "SARVAM_UPSTREAM_MY_CLOUD_KEY")
        for bad in ["local2", "=http://x", "a b=http://x", "x=ftp://host", "x=not a url", "x=http://"] {
            XCTAssertThrowsError(try UpstreamConfiguration.parse(bad), bad) { error in
                XCTAssertTrue("\(error)".contains("expected NAME=URL"), "\(error)")
            }
        }
    }

    func testErrorStatusesNameTheUpstream() {
        let body = #"{"error": {"message": "Invalid 'temperature'", "type": "invalid_request_error", "param": "temperature"}}"#
        let client = UpstreamErrors.status("cloud", code: 400, body: body)
        XCTAssertEqual(client.status.code, 400)
        XCTAssertEqual(client.message, "cloud: Invalid 'temperature'")
        XCTAssertEqual(client.param, "temperature")
        let limited = UpstreamErrors.status("cloud", code: 429, body: "slow down")
        XCTAssertEqual(limited.status.code, 429)
        XCTAssertEqual(limited.message, "cloud: slow down")
        let server = UpstreamErrors.status("cloud", code: 503, body: #"{"error": {"message": "overloaded", "code": 503}}"#)
        XCTAssertEqual(server.status.code, 502)
        XCTAssertEqual(server.code, "upstream_error")
        XCTAssertTrue(server.message.contains("'cloud'") && server.message.contains("503") && server.message.contains("overloaded"))
        XCTAssertEqual(UpstreamErrors.timeout("cloud", phase: "x", after: .seconds(30)).status.code, 504)
        XCTAssertTrue(UpstreamErrors.timeout("cloud", phase: "x", after: .milliseconds(1500)).message.contains("1.5 s"))
    }

    /// Only an explicit `max_tokens` goes upstream: the default (the rest of the context) is the
    /// upstream's own to apply.
    func testRequestBodyRewritesTheModelAndKeepsExplicitLimits() throws {
        let client = UpstreamTestClient()
        defer { client.shutdown() }
        let info = ModelInfo(id: "cloud/big", contextLength: 1000, ownedBy: "cloud")
        let engine = UpstreamChatEngine(provider: client.provider, remoteModel: "big", modelInfo: info)
        let messages = [ChatMessage(role: .user, content: "hi")]
        let room = info.contextLength - (try engine.countTokens(messages))
        let asked = try engine.body(for: GenerationRequest(messages: messages, maxTokens: 40, sampling: .init(temperature: 0)))
        XCTAssertEqual(asked.model, "big")
        XCTAssertEqual(asked.maxTokens, 40)
        XCTAssertEqual(asked.temperature, 0)
        XCTAssertTrue(asked.stream)
        XCTAssertNil(try engine.body(for: GenerationRequest(messages: messages, maxTokens: room)).maxTokens)
    }
}

/// A provider over a client that never connects, for tests of what it builds.
final class UpstreamTestClient {
    let upstreams = Upstreams([UpstreamConfiguration(name: "cloud", baseURL: "http://127.0.0.1:9")], logger: .init(label: "test"))
    var provider: UpstreamProvider { upstreams.providers[0] }
    func shutdown() {
        let upstreams = self.upstreams
        let done = DispatchSemaphore(value: 0)
        Task {
            await upstreams.shutdown()
            done.signal()
        }
        done.wait()
    }
}
