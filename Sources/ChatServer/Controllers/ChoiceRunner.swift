import Foundation
import NIOCore

/// The `n` choices of one `/v1` request: each is its own generation in the engine (its own ticket,
/// sequence and sampler), driven side by side; their output reaches one response writer in turn.
struct ChoiceRunner: Sendable {
    /// One started choice.
    struct Started: Sendable {
        var stream: AsyncThrowingStream<GenerationEvent, Error>
        var ticket: GenerationRegistry.Ticket
        var cacheHit: Bool
    }

    let service: ChatService
    let engine: any ChatEngine
    let started: [Started]
    /// Every choice was answered from the response cache.
    var cacheHit: Bool { started.allSatisfy(\.cacheHit) }

    /// Admits and starts one generation per request, before any response header is sent: a
    /// refusal (429, 400, 503) drops the choices already started and is thrown.
    static func start(_ requests: [GenerationRequest], engine: any ChatEngine, service: ChatService) async throws -> ChoiceRunner {
        var requests = requests
        // The user's quotas: one request counted, and the choices share what is left of the day's tokens.
        if let user = requests.first?.userId, let left = try await service.quotas.admit(userId: user) {
            let share = max(1, left / requests.count)
            for i in requests.indices { requests[i].maxTokens = min(requests[i].maxTokens, share) }
        }
        var started: [Started] = []
        do {
            for request in requests {
                let ticket = try await service.registry.admit(userId: request.userId)
                let (stream, hit) = try await startGeneration(
                    engine: engine, request: request, ticket: ticket, registry: service.registry)
                started.append(Started(stream: stream, ticket: ticket, cacheHit: hit))
            }
        } catch {
            for choice in started {
                abandon(choice.stream)
                await service.registry.finish(choice.ticket)
            }
            throw error
        }
        return ChoiceRunner(service: service, engine: engine, started: started)
    }

    /// Drives every choice to its end for a reply sent whole: nothing is written until then, so only
    /// the connection tells that the client left, and then the choices are cancelled like a stream
    /// whose write failed. Throws what the client is told instead of a partial reply.
    func driveWhole(stops: [String], minTokens: Int, stats: RequestStats, channel: any Channel) async throws -> [GenerationOutcome] {
        let (outcomes, hungUp) = await cancellingOnHangUp(channel) {
            await drive(stops: stops, minTokens: minTokens, stats: stats, emit: { _, _ in })
        }
        if let error = outcomes.lazy.compactMap(\.error).first { throw error }
        if outcomes.contains(where: { $0.finishReason == nil }) {
            throw hungUp ? APIError.clientClosed : APIError.unavailable("The reply was interrupted (the server is shutting down).")
        }
        return outcomes
    }

    /// Drives every choice to its end. `emit(index, output)` calls never overlap. Outcomes are in
    /// choice order; their combined usage is recorded in the request's statistics.
    func drive(
        stops: [String], minTokens: Int, stats: RequestStats,
        emit: @escaping @Sendable (Int, DriverOutput) async throws -> Void
    ) async -> [GenerationOutcome] {
        let gate = SerialGate()
        let registry = service.registry
        let pingInterval = service.configuration.pingInterval
        return await withTaskGroup(of: (Int, GenerationOutcome).self) { group in
            for (index, choice) in started.enumerated() {
                group.addTask {
                    let outcome = await driveGeneration(
                        stream: choice.stream, stops: stops, minTokens: minTokens, pingInterval: pingInterval,
                        registerCancel: { await registry.attach(choice.ticket, cancel: $0) },
                        emit: { output in try await gate.run { try await emit(index, output) } })
                    await registry.finish(choice.ticket)
                    return (index, outcome)
                }
            }
            var outcomes = [GenerationOutcome?](repeating: nil, count: started.count)
            for await (index, outcome) in group { outcomes[index] = outcome }
            let all = outcomes.map { $0! }
            stats.record(usage: combinedUsage(all), outcome: all[0].status.rawValue)
            return all
        }
    }
}

/// The usage of all choices: the prompt counted once (as OpenAI does), the completions summed.
func combinedUsage(_ outcomes: [GenerationOutcome]) -> GenerationUsage {
    let usages = outcomes.map(\.usage)
    return GenerationUsage(
        promptTokens: usages.map(\.promptTokens).max() ?? 0,
        completionTokens: usages.reduce(0) { $0 + $1.completionTokens },
        cachedPromptTokens: usages.map(\.cachedPromptTokens).max() ?? 0,
        cachedResponse: !usages.isEmpty && usages.allSatisfy(\.cachedResponse))
}

/// The first choice's error, or a 503 when one was cut short without one (a shutdown); nil when
/// every choice finished.
func unfinishedError(_ outcomes: [GenerationOutcome]) -> APIError? {
    if let error = outcomes.lazy.compactMap(\.error).first { return error }
    if outcomes.contains(where: { $0.finishReason == nil }) {
        return APIError(status: .serviceUnavailable, message: "The reply was interrupted.", type: "server_error", code: "interrupted")
    }
    return nil
}

/// Runs async operations one at a time in arrival order (an actor alone would let a second
/// operation start while the first is suspended in a write).
actor SerialGate {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ operation: @Sendable () async throws -> T) async throws -> T {
        while busy { await withCheckedContinuation { waiting.append($0) } }
        busy = true
        defer {
            busy = false
            if !waiting.isEmpty { waiting.removeFirst().resume() }
        }
        return try await operation()
    }
}
