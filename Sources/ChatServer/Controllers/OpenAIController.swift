import Foundation
import Hummingbird

/// `GET /v1/models` and `POST /v1/chat/completions`, shaped as OpenAI's API.
struct OpenAIController: Sendable {
    let service: ChatService

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("models") { _, _ in try models() }
        group.post("chat/completions") { request, context in try await chatCompletions(request, context: context) }
    }

    func models() throws -> ModelListResponse {
        if case .loading = service.catalog.state { throw APIError.loading }
        return ModelListResponse(data: service.catalog.models.map(ModelListResponse.Model.init))
    }

    func chatCompletions(_ request: Request, context: ServerContext) async throws -> Response {
        let user = try context.requireUser()
        let body = try decodeBody(
            ChatCompletionRequest.self, from: try await request.collectBody(limit: service.configuration.maxBodyBytes))

        // Fields.
        guard !body.messages.isEmpty else { throw APIError.invalidRequest("'messages' must hold at least one message.", param: "messages") }
        var messages: [ChatMessage] = []
        for (i, m) in body.messages.enumerated() {
            let role: ChatMessage.Role
            switch m.role {
            case "system", "developer": role = .system
            case "user": role = .user
            case "assistant": role = .assistant
            default:
                throw APIError.invalidRequest(
                    "messages[\(i)].role must be 'system', 'user' or 'assistant'; got '\(m.role)'.",
                    param: "messages[\(i)].role")
            }
            messages.append(ChatMessage(role: role, content: m.content))
        }
        if let n = body.n, n != 1 { throw APIError.invalidRequest("Only n = 1 is supported; got \(n).", param: "n") }
        let stops = body.stop?.values ?? []
        if stops.count > 4 { throw APIError.invalidRequest("'stop' takes at most 4 sequences; got \(stops.count).", param: "stop") }
        let requestedMax = body.maxCompletionTokens ?? body.maxTokens
        let sampling = try SamplingFields(
            maxTokens: requestedMax, temperature: body.temperature, topP: body.topP, seed: body.seed,
            presencePenalty: body.presencePenalty, frequencyPenalty: body.frequencyPenalty
        ).validated()
        if let m = body.maxCompletionTokens, m < 1 {
            throw APIError.invalidRequest("max_completion_tokens must be at least 1; got \(m).", param: "max_completion_tokens")
        }

        // Model and context.
        let thinkHarder = ["1", "true", "yes"].contains(request.headers[.sarvamThinkHarder]?.lowercased() ?? "")
        let choice = try service.selectEngine(model: body.model, messages: messages, previousModel: nil, thinkHarder: thinkHarder)
        context.stats.noteRoute(choice)
        let engine = choice.engine
        let info = engine.modelInfo
        let promptTokens: Int
        do { promptTokens = try engine.countTokens(messages) } catch { throw APIError.from(engine: error) }
        if promptTokens >= info.contextLength {
            throw APIError.contextLengthExceeded(promptTokens: promptTokens, limit: info.contextLength)
        }
        if let requestedMax, promptTokens + requestedMax > info.contextLength {
            throw APIError(
                status: .badRequest,
                message:
                    "This model's maximum context length is \(info.contextLength) tokens. However, you requested \(promptTokens + requestedMax) tokens (\(promptTokens) in the messages, \(requestedMax) in the completion). Please reduce the length of the messages or completion.",
                type: "invalid_request_error", param: "messages", code: "context_length_exceeded")
        }
        var generation = GenerationRequest(
            messages: messages, maxTokens: requestedMax ?? (info.contextLength - promptTokens),
            sampling: sampling, userId: user.userId, requestId: context.id)
        if let left = try await service.quotas.admit(userId: user.userId) { generation.maxTokens = min(generation.maxTokens, left) }

        let ticket = try await service.registry.admit(userId: user.userId)
        let registry = service.registry
        let (stream, cacheHit) = try await startGeneration(engine: engine, request: generation, ticket: ticket, registry: registry)
        let id = "chatcmpl-" + randomHex(bytes: 12)
        let created = Int(Date().timeIntervalSince1970)
        let pingInterval = service.configuration.pingInterval
        let stats = context.stats

        guard body.stream == true else {
            // Nothing is written until the end, so only the connection tells that the client left:
            // then the generation is cancelled like a stream whose write failed.
            let (outcome, hungUp) = await cancellingOnHangUp(context.channel) {
                await driveGeneration(
                    stream: stream, stops: stops, pingInterval: pingInterval,
                    registerCancel: { await registry.attach(ticket, cancel: $0) }, emit: { _ in })
            }
            await registry.finish(ticket)
            stats.record(usage: outcome.usage, outcome: outcome.status.rawValue)
            if let error = outcome.error { throw error }
            if hungUp && outcome.finishReason == nil { throw APIError.clientClosed }
            guard let finish = outcome.finishReason else {
                throw APIError.unavailable("The reply was interrupted (the server is shutting down).")
            }
            var response = try jsonResponse(
                ChatCompletionResponse(
                    id: id, created: created, model: info.id,
                    choices: [.init(message: .init(content: outcome.text), finishReason: finish)],
                    usage: UsageResponse(outcome.usage)))
            if cacheHit { response.headers[.sarvamCache] = "hit" }
            return response
        }

        let includeUsage = body.streamOptions?.includeUsage == true
        @Sendable func chunk(_ delta: ChatCompletionChunk.Delta, finish: FinishReason? = nil) -> ChatCompletionChunk {
            ChatCompletionChunk(id: id, created: created, model: info.id, choices: [.init(delta: delta, finishReason: finish)])
        }
        var response = sseResponse { write in
            let outcome = await driveGeneration(
                stream: stream, stops: stops, pingInterval: pingInterval,
                registerCancel: { await registry.attach(ticket, cancel: $0) },
                emit: { output in
                    switch output {
                    case .ping: try await write(SSE.ping)
                    case .promptProcessed: try await write(SSE.data(chunk(.init(role: "assistant", content: ""))))
                    case .text(let text): try await write(SSE.data(chunk(.init(content: text))))
                    }
                })
            await registry.finish(ticket)
            stats.record(usage: outcome.usage, outcome: outcome.status.rawValue)
            if let finish = outcome.finishReason {
                try await write(SSE.data(chunk(.init(), finish: finish)))
                if includeUsage {
                    try await write(
                        SSE.data(
                            ChatCompletionChunk(
                                id: id, created: created, model: info.id, choices: [],
                                usage: UsageResponse(outcome.usage))))
                }
            } else {
                let error =
                    outcome.error
                    ?? APIError(
                        status: .serviceUnavailable, message: "The reply was interrupted.",
                        type: "server_error", code: "interrupted")
                try await write(SSE.data(error.body))
            }
            try await write(SSE.done)
        }
        if cacheHit { response.headers[.sarvamCache] = "hit" }
        return response
    }
}


func randomHex(bytes: Int) -> String {
    var rng = SystemRandomNumberGenerator()
    return Data((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &rng) }).hexString
}
