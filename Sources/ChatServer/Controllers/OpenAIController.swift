import Foundation
import Hummingbird

/// `GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`, shaped as OpenAI's API.
struct OpenAIController: Sendable {
    let service: ChatService

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("models") { _, _ in try models() }
        group.post("chat/completions") { request, context in try await chatCompletions(request, context: context) }
        group.post("completions") { request, context in try await completions(request, context: context) }
    }

    func models() throws -> ModelListResponse {
        if case .loading = service.catalog.state { throw APIError.loading }
        return ModelListResponse(data: service.catalog.models.map(ModelListResponse.Model.init))
    }

    func chatCompletions(_ request: Request, context: ServerContext) async throws -> Response {
        let user = try context.requireUser()
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        try OpenAIFields.check(Data(buffer.readableBytesView), supported: OpenAIFields.chat)
        let body = try decodeBody(ChatCompletionRequest.self, from: buffer)

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
        if body.topLogprobs != nil && body.logprobs != true {
            throw APIError.invalidRequest("'top_logprobs' needs logprobs: true.", param: "top_logprobs")
        }
        let options = try OpenAIOptions.check(
            maxTokens: body.maxCompletionTokens ?? body.maxTokens,
            maxTokensField: body.maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens",
            temperature: body.temperature, topP: body.topP, seed: body.seed, presencePenalty: body.presencePenalty,
            frequencyPenalty: body.frequencyPenalty, stop: body.stop?.values, n: body.n, ignoreEOS: body.ignoreEOS,
            minTokens: body.minTokens, logprobs: body.logprobs == true ? (body.topLogprobs ?? 0) : nil,
            logprobsField: "top_logprobs", stream: body.stream, includeUsage: body.streamOptions?.includeUsage)

        // Model and context.
        let thinkHarder = ["1", "true", "yes"].contains(request.headers[.sarvamThinkHarder]?.lowercased() ?? "")
        let choice = try service.selectEngine(model: body.model, messages: messages, previousModel: nil, thinkHarder: thinkHarder)
        context.stats.noteRoute(choice)
        let engine = choice.engine
        let info = engine.modelInfo
        let promptTokens: Int
        do { promptTokens = try engine.countTokens(messages) } catch { throw APIError.from(engine: error) }
        let maxTokens = try Self.replyLimit(options, promptTokens: promptTokens, contextLength: info.contextLength, param: "messages")
        let runner = try await ChoiceRunner.start(
            options.requests(
                messages: messages, promptTokens: nil, maxTokens: maxTokens, userId: user.userId, requestId: context.id),
            engine: engine, service: service)
        let id = "chatcmpl-" + randomHex(bytes: 12)
        let created = Int(Date().timeIntervalSince1970)
        let stats = context.stats
        let wantsLogprobs = options.logprobs != nil

        guard options.stream else {
            let outcomes = try await runner.driveWhole(
                stops: options.stops, minTokens: options.minTokens, stats: stats, channel: context.channel)
            let choices = outcomes.enumerated().map { i, outcome in
                ChatCompletionResponse.Choice(
                    index: i, message: .init(content: outcome.text), finishReason: outcome.finishReason!,
                    logprobs: wantsLogprobs ? ChatLogprobs(outcome.logprobs, engine: engine) : nil)
            }
            var response = try jsonResponse(
                ChatCompletionResponse(
                    id: id, created: created, model: info.id, choices: choices, usage: UsageResponse(combinedUsage(outcomes))))
            if runner.cacheHit { response.headers[.sarvamCache] = "hit" }
            return response
        }

        @Sendable func chunk(_ index: Int, _ delta: ChatCompletionChunk.Delta, finish: FinishReason? = nil,
                             logprobs: ChatLogprobs? = nil) -> ChatCompletionChunk {
            ChatCompletionChunk(
                id: id, created: created, model: info.id,
                choices: [.init(index: index, delta: delta, finishReason: finish, logprobs: logprobs)])
        }
        var response = sseResponse { write in
            let outcomes = await runner.drive(stops: options.stops, minTokens: options.minTokens, stats: stats) { index, output in
                switch output {
                case .ping: try await write(SSE.ping)
                case .promptProcessed: try await write(SSE.data(chunk(index, .init(role: "assistant", content: ""))))
                case .text(let text, let entries):
                    let logprobs = wantsLogprobs ? ChatLogprobs(entries, engine: engine) : nil
                    try await write(SSE.data(chunk(index, .init(content: text), logprobs: logprobs)))
                }
            }
            for (index, outcome) in outcomes.enumerated() {
                if let finish = outcome.finishReason { try await write(SSE.data(chunk(index, .init(), finish: finish))) }
            }
            if let error = unfinishedError(outcomes) {
                try await write(SSE.data(error.body))
            } else if options.includeUsage {
                try await write(
                    SSE.data(
                        ChatCompletionChunk(
                            id: id, created: created, model: info.id, choices: [], usage: UsageResponse(combinedUsage(outcomes)))))
            }
            try await write(SSE.done)
        }
        if runner.cacheHit { response.headers[.sarvamCache] = "hit" }
        return response
    }

    /// The reply's token limit: what the client asked for, or what the context leaves; a request
    /// that cannot fit is a 400 naming `param` (the prompt's field).
    static func replyLimit(_ options: OpenAIOptions, promptTokens: Int, contextLength: Int, param: String) throws -> Int {
        if promptTokens >= contextLength {
            throw APIError.contextLengthExceeded(promptTokens: promptTokens, limit: contextLength, param: param)
        }
        if let requested = options.maxTokens, promptTokens + requested > contextLength {
            throw APIError(
                status: .badRequest,
                message:
                    "This model's maximum context length is \(contextLength) tokens. However, you requested \(promptTokens + requested) tokens (\(promptTokens) in the \(param), \(requested) in the completion). Please reduce the length of the \(param) or completion.",
                type: "invalid_request_error", param: param, code: "context_length_exceeded")
        }
        return options.maxTokens ?? (contextLength - promptTokens)
    }
}

func randomHex(bytes: Int) -> String {
    var rng = SystemRandomNumberGenerator()
    return Data((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &rng) }).hexString
}
