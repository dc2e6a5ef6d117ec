import AsyncHTTPClient
import Foundation
import Logging
import NIOCore

/// A model of an upstream, behind the same seam as a local engine: the controllers, the stored
/// conversations, stop and the driver's pings work unchanged. Every request goes upstream as a
/// stream (`stream: true`, with usage), whatever the client asked, and its pieces are passed on as
/// they arrive; a non-streaming client gets them gathered by the driver as for a local model.
struct UpstreamChatEngine: ChatEngine {
    let provider: UpstreamProvider
    /// The model's name at the upstream (without our `NAME/`).
    let remoteModel: String
    let modelInfo: ModelInfo

    /// An estimate, as the upstream's tokenizer is unknown here: a token per 3 bytes of UTF-8 plus 4
    /// per message, which over-counts English and code (about 4 bytes a token) so that a fitted
    /// history errs on the side of fitting. The upstream's own count comes back in its usage.
    func countTokens(_ messages: [ChatMessage]) throws -> Int {
        messages.reduce(3) { $0 + 4 + ($1.content.utf8.count + 2) / 3 }
    }

    func startGeneration(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        try provider.admit(userId: request.userId)
        return stream(request)
    }

    func generate(_ request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error> {
        do { return try startGeneration(request) } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    /// Runs the exchange in a task of its own; the consumer going away cancels it, which closes the
    /// upstream request.
    private func stream(_ request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error> {
        let (events, continuation) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        let task = Task { [self] in
            defer { provider.release(userId: request.userId) }
            do {
                try await exchangeWithTimeouts(request, continuation)
                continuation.finish()
            } catch {
                continuation.finish(throwing: outcome(of: error, request: request))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return events
    }

    /// Counts and logs how the request ended; the error the client reads.
    private func outcome(of error: Error, request: GenerationRequest) -> Error {
        let metrics = provider.metrics
        if Task.isCancelled || error is CancellationError {
            metrics.count(outcome: "cancelled")
            return CancellationError()
        }
        let api: APIError
        let kind: String
        switch error {
        case let e as APIError:
            api = e
            switch e.code {
            case "upstream_timeout": kind = "timeout"
            case "upstream_interrupted": kind = "interrupted"
            case "upstream_error": kind = "server_error"
            default: kind = e.status.code == 429 ? "rate_limited" : "client_error"
            }
        case let e as ChatEngineError:
            return e
        default:
            api = UpstreamErrors.unavailable(provider.name, Self.describe(error))
            kind = "unavailable"
            provider.reportUnreachable()
        }
        metrics.count(outcome: "error")
        metrics.countError(kind: kind)
        provider.logger.warning(
            "upstream request failed",
            metadata: [
                "upstream": "\(provider.name)", "model": "\(remoteModel)", "request": "\(request.requestId)", "error": "\(api.message)",
            ])
        return api
    }

    /// The exchange raced against the two timeouts; whichever ends first wins and the other is cancelled.
    private func exchangeWithTimeouts(
        _ request: GenerationRequest, _ continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
    ) async throws {
        let configuration = provider.configuration
        let watchdog = ActivityWatchdog(firstByte: configuration.firstByteTimeout, idle: configuration.idleTimeout)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await exchange(request, watchdog: watchdog, continuation) }
            group.addTask {
                let phase = try await watchdog.run()
                throw UpstreamErrors.timeout(
                    provider.name, phase: phase.description,
                    after: phase == .firstByte ? configuration.firstByteTimeout : configuration.idleTimeout)
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    private func exchange(
        _ request: GenerationRequest, watchdog: ActivityWatchdog, _ continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
    ) async throws {
        let configuration = provider.configuration
        var http = HTTPClientRequest(url: configuration.chatCompletionsURL)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: "text/event-stream")
        if let key = configuration.key { http.headers.add(name: "Authorization", value: "Bearer \(key)") }
        http.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body(for: request))))

        // The deadline is the watchdog's to keep: a long reply may stream for as long as it needs.
        let response = try await provider.client.execute(http, deadline: .distantFuture)
        watchdog.touch()
        guard response.status.code < 300 else {
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            throw UpstreamErrors.status(provider.name, code: Int(response.status.code), body: text)
        }

        let estimate = try countTokens(request.messages)
        var parser = ServerSentEventParser()
        var started = false
        var finish: FinishReason?
        var usage: UpstreamChunk.Usage?
        var pieces = 0
        stream: for try await buffer in response.body {
            watchdog.touch()
            for data in parser.feed(buffer.readableBytesView) {
                if data == "[DONE]" { break stream }
                guard let chunk = try? JSONDecoder().decode(UpstreamChunk.self, from: Data(data.utf8)) else {
                    throw UpstreamErrors.interrupted(provider.name, "a stream event is not a chat completion chunk: \(data.prefix(200))")
                }
                if let error = chunk.error {
                    throw UpstreamErrors.interrupted(provider.name, error.message ?? data)
                }
                if !started {
                    started = true
                    continuation.yield(.promptProcessed(promptTokens: estimate))
                }
                if let u = chunk.usage { usage = u }
                guard let choice = chunk.choices?.first else { continue }
                if let text = choice.delta?.content, !text.isEmpty {
                    pieces += 1
                    continuation.yield(.text(text, tokenCount: 1))
                }
                if let reason = choice.finishReason { finish = reason == "length" ? .length : .stop }
            }
        }
        guard let finish else {
            throw UpstreamErrors.interrupted(provider.name, "the stream ended before the reply finished")
        }
        let counted = GenerationUsage(
            promptTokens: usage?.promptTokens ?? estimate, completionTokens: usage?.completionTokens ?? pieces,
            cachedPromptTokens: usage?.promptTokensDetails?.cachedTokens ?? 0)
        provider.metrics.count(outcome: finish.rawValue)
        provider.metrics.promptTokens.increment(by: Int64(counted.promptTokens))
        provider.metrics.completionTokens.increment(by: Int64(counted.completionTokens))
        continuation.yield(.finished(finish, counted))
    }

    /// The request as the upstream gets it: our messages and sampling, its model's own name. Zero
    /// penalties and a `max_tokens` that only says "the rest of the context" are left out, as
    /// upstreams differ in what they accept and default to.
    func body(for request: GenerationRequest) throws -> UpstreamChatRequest {
        let room = modelInfo.contextLength - (try countTokens(request.messages))
        let s = request.sampling
        return UpstreamChatRequest(
            model: remoteModel, messages: request.messages.map { .init(role: $0.role.rawValue, content: $0.content) },
            stream: true, streamOptions: .init(includeUsage: true),
            maxTokens: request.maxTokens < room ? request.maxTokens : nil, temperature: s.temperature, topP: s.topP,
            seed: s.seed, presencePenalty: s.presencePenalty == 0 ? nil : s.presencePenalty,
            frequencyPenalty: s.frequencyPenalty == 0 ? nil : s.frequencyPenalty)
    }

    /// A transport error in a line a client can read (never the request, so never the key).
    static func describe(_ error: Error) -> String {
        if let e = error as? UpstreamSettingError { return e.description }
        if error is DecodingError { return "its answer is not the expected JSON" }
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("connect timeout") { return "the connection timed out" }
        if text.contains("connection refused") || text.contains("Connection refused") { return "connection refused" }
        return text.count > 300 ? String(text.prefix(300)) + "…" : text
    }
}

/// The deadline of an exchange: `firstByte` until the response head arrives, then `idle` after each
/// piece of the body. `run` returns the phase whose deadline passed.
final class ActivityWatchdog: @unchecked Sendable {
    enum Phase: Sendable, CustomStringConvertible {
        case firstByte, idle
        var description: String { self == .firstByte ? "no response to the request" : "silence between two pieces of the reply" }
    }
    private let lock = NSLock()
    private let idle: Duration
    private var deadline: ContinuousClock.Instant
    private var phase = Phase.firstByte

    init(firstByte: Duration, idle: Duration) {
        self.idle = idle
        deadline = .now + firstByte
    }

    func touch() {
        lock.withLock {
            phase = .idle
            deadline = .now + idle
        }
    }

    func run() async throws -> Phase {
        while true {
            let (deadline, phase) = lock.withLock { (self.deadline, self.phase) }
            if ContinuousClock.now >= deadline { return phase }
            try await Task.sleep(until: deadline, clock: .continuous)
        }
    }
}

/// `POST /v1/chat/completions` as sent upstream.
struct UpstreamChatRequest: Encodable {
    struct Message: Encodable {
        var role: String
        var content: String
    }
    struct StreamOptions: Encodable {
        var includeUsage: Bool
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }
    }
    var model: String
    var messages: [Message]
    var stream: Bool
    var streamOptions: StreamOptions
    var maxTokens: Int?
    var temperature: Double?
    var topP: Double?
    var seed: UInt64?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    enum CodingKeys: String, CodingKey {
        case model, messages, stream, temperature, seed
        case streamOptions = "stream_options", maxTokens = "max_tokens", topP = "top_p"
        case presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty"
    }
}

/// One `data:` event of a streamed chat completion, as far as we read it.
struct UpstreamChunk: Decodable {
    struct Choice: Decodable {
        struct Delta: Decodable { var content: String? }
        var delta: Delta?
        var finishReason: String?
        enum CodingKeys: String, CodingKey { case delta, finishReason = "finish_reason" }
    }
    struct Usage: Decodable {
        struct Details: Decodable {
            var cachedTokens: Int?
            enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
        }
        var promptTokens: Int?
        var completionTokens: Int?
        var promptTokensDetails: Details?
        enum CodingKeys: String, CodingKey {
            case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", promptTokensDetails = "prompt_tokens_details"
        }
    }
    var choices: [Choice]?
    var usage: Usage?
    var error: UpstreamErrorBody.Detail?
}
