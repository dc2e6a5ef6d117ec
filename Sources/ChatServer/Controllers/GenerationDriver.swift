import Foundation

/// What the driver hands to a response writer, in order: pings until the prompt is processed (and
/// during any long silence), `promptProcessed` once, then text with the log-probabilities of the
/// tokens it completes (empty unless the request asked for them; the text may then be empty).
enum DriverOutput: Sendable {
    case ping
    case promptProcessed(promptTokens: Int)
    case text(String, logprobs: [TokenLogprobs])
}

/// How a generation ended, with what the client was sent.
struct GenerationOutcome: Sendable {
    /// Text emitted to the client (stop strings cut off).
    var text = ""
    /// Log-probabilities of the tokens emitted (when asked for).
    var logprobs: [TokenLogprobs] = []
    var promptTokens: Int?
    var completionTokens = 0
    /// Prompt tokens served from the prefix cache (known when the engine finishes).
    var cachedPromptTokens = 0
    /// The reply came whole from the response cache.
    var cachedResponse = false
    /// Set when the engine finished (or a stop string matched).
    var finishReason: FinishReason?
    /// Client gone, stop requested, or shutdown: the partial `text` is what the client saw.
    var interrupted = false
    var error: APIError?
    var startedAt: ContinuousClock.Instant
    var promptDoneAt: ContinuousClock.Instant?
    var endedAt: ContinuousClock.Instant

    var usage: GenerationUsage {
        GenerationUsage(
            promptTokens: promptTokens ?? 0, completionTokens: completionTokens, cachedPromptTokens: cachedPromptTokens,
            cachedResponse: cachedResponse)
    }
    /// Seconds from the prompt being processed to the end (the decode phase).
    var generationSeconds: Double { ((endedAt - (promptDoneAt ?? startedAt)) / .seconds(1)) }
    var tokensPerSecond: Double? {
        let s = generationSeconds
        return completionTokens > 0 && s > 0 ? Double(completionTokens) / s : nil
    }
    var status: MessageStatus { error != nil ? .error : (finishReason != nil ? .complete : .interrupted) }
}

/// Starts a generation on `engine` for an admitted ticket, releasing the ticket if the engine
/// refuses (the refusal becomes the HTTP error: 429, 400...). `cacheHit`: the reply is a stored one.
func startGeneration(
    engine: any ChatEngine, request: GenerationRequest, ticket: GenerationRegistry.Ticket,
    registry: GenerationRegistry
) async throws -> (stream: AsyncThrowingStream<GenerationEvent, Error>, cacheHit: Bool) {
    do {
        return try engine.startGenerationReportingCache(request)
    } catch {
        await registry.finish(ticket)
        throw APIError.from(engine: error)
    }
}

/// Runs one generation: consumes the engine's stream in a task of its own (so that a stop, a
/// shutdown or a vanished client can cancel it, which fires the stream's `onTermination` and stops
/// the engine), applies stop strings, sends pings through silences, and hands output to `emit`.
/// When `emit` throws (the client is gone) the generation is cancelled and the outcome is
/// `interrupted` with the text emitted so far. Never throws: failures are in the outcome.
/// Stop strings are looked for once `minTokens` tokens are generated (as vLLM's `min_tokens`).
func driveGeneration(
    stream: AsyncThrowingStream<GenerationEvent, Error>,
    stops: [String],
    minTokens: Int = 0,
    pingInterval: Duration,
    registerCancel: @Sendable (@escaping @Sendable () -> Void) async -> Void,
    emit: @Sendable (DriverOutput) async throws -> Void
) async -> GenerationOutcome {
    enum Item: Sendable {
        case tick
        case prompt(Int)
        case text(String, Int)
        case logprobs(TokenLogprobs)
        case finished(FinishReason, GenerationUsage)
        case ended
        case failed(any Error)
    }
    let clock = ContinuousClock()
    var outcome = GenerationOutcome(startedAt: clock.now, endedAt: clock.now)
    let (items, sink) = AsyncStream<Item>.makeStream()

    let consumer = Task {
        var matcher = StopSequenceMatcher(stops)
        var done = false
        var promptTokens = 0
        var produced = 0
        do {
            for try await event in stream {
                if done { continue }  // a stop string matched: wait to be cancelled
                switch event {
                case .promptProcessed(let n):
                    promptTokens = n
                    sink.yield(.prompt(n))
                case .logprobs(let entry):
                    sink.yield(.logprobs(entry))
                case .text(let text, let tokens) where minTokens > 0 && produced + tokens <= minTokens:
                    produced += tokens
                    sink.yield(.text(text, tokens))
                case .text(let text, let tokens):
                    produced += tokens
                    let (safe, matched) = matcher.feed(text)
                    sink.yield(.text(safe, tokens))
                    if matched {
                        done = true
                        sink.yield(.finished(.stop, GenerationUsage(promptTokens: promptTokens, completionTokens: produced)))
                    }
                case .finished(let reason, let usage):
                    let rest = matcher.flush()
                    if !rest.isEmpty { sink.yield(.text(rest, 0)) }
                    done = true
                    sink.yield(.finished(reason, usage))
                }
            }
            if !done { sink.yield(.ended) }
        } catch {
            if !done { sink.yield(Task.isCancelled || error is CancellationError ? .ended : .failed(error)) }
        }
        sink.finish()
    }
    await registerCancel { consumer.cancel() }
    let ticker = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: pingInterval)
            sink.yield(.tick)
        }
    }

    // A first ping at once: the client gets its headers and knows the request was accepted.
    var lastWrite = clock.now
    var clientGone = false
    /// Log-probabilities of tokens whose text has not been emitted yet.
    var pendingLogprobs: [TokenLogprobs] = []
    do { try await emit(.ping) } catch { clientGone = true }

    if !clientGone {
        await withTaskCancellationHandler {
            loop: for await item in items {
                do {
                    switch item {
                    case .tick:
                        if clock.now - lastWrite >= pingInterval * 0.9 {
                            try await emit(.ping)
                            lastWrite = clock.now
                        }
                    case .prompt(let n):
                        outcome.promptTokens = n
                        outcome.promptDoneAt = clock.now
                        try await emit(.promptProcessed(promptTokens: n))
                        lastWrite = clock.now
                    case .logprobs(let entry):
                        pendingLogprobs.append(entry)
                    case .text(let text, let tokens):
                        outcome.completionTokens += tokens
                        if !text.isEmpty {
                            outcome.text += text
                            outcome.logprobs += pendingLogprobs
                            RequestStats.current?.noteFirstToken()
                            let attached = pendingLogprobs
                            pendingLogprobs = []
                            try await emit(.text(text, logprobs: attached))
                            lastWrite = clock.now
                        }
                    case .finished(let reason, let usage):
                        if !pendingLogprobs.isEmpty {
                            // Tokens without text of their own (a special token under ignore_eos, a
                            // stop string's tokens): their entries close the list.
                            outcome.logprobs += pendingLogprobs
                            try await emit(.text("", logprobs: pendingLogprobs))
                            pendingLogprobs = []
                        }
                        outcome.finishReason = reason
                        outcome.completionTokens = usage.completionTokens
                        outcome.cachedPromptTokens = usage.cachedPromptTokens
                        outcome.cachedResponse = usage.cachedResponse
                        if usage.promptTokens > 0 { outcome.promptTokens = usage.promptTokens }
                        break loop
                    case .ended:
                        break loop
                    case .failed(let error):
                        outcome.error = APIError.from(engine: error)
                        break loop
                    }
                } catch {
                    clientGone = true
                    break loop
                }
            }
        } onCancel: {
            consumer.cancel()
        }
    }
    ticker.cancel()
    consumer.cancel()
    sink.finish()
    outcome.endedAt = clock.now
    if outcome.finishReason == nil && outcome.error == nil { outcome.interrupted = true }
    return outcome
}

/// Drops a started stream that will never be driven: cancelling its consumer stops the engine.
func abandon(_ stream: AsyncThrowingStream<GenerationEvent, Error>) {
    Task { for try await _ in stream {} }.cancel()
}

/// Runs `operation` outside the current task's cancellation: what must reach the database (the
/// interrupted reply of a vanished client) is written even when the request's task is cancelled.
func uncancelled<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task.detached(operation: operation).value
}
