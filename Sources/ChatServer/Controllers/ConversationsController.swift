import Foundation
import Hummingbird

/// Per-conversation defaults, stored as JSON in `conversations.settings`.
struct ConversationSettings: Codable, Sendable {
    var temperature: Double?
    var topP: Double?
    var maxTokens: Int?
    enum CodingKeys: String, CodingKey { case temperature, topP = "top_p", maxTokens = "max_tokens" }

    static func decode(_ text: String) -> ConversationSettings {
        (try? JSONDecoder().decode(ConversationSettings.self, from: Data(text.utf8))) ?? ConversationSettings()
    }
    var encoded: String { (try? String(decoding: JSONEncoder.api.encode(self), as: UTF8.self)) ?? "{}" }
}

struct CreateConversationBody: Decodable {
    var title: String?
    var model: String?
    var systemPrompt: String?
    var temperature: Double?
    var topP: Double?
    var maxTokens: Int?
    enum CodingKeys: String, CodingKey {
        case title, model, temperature, systemPrompt = "system_prompt", topP = "top_p", maxTokens = "max_tokens"
    }
}

struct RenameConversationBody: Decodable { var title: String }

struct ReplyBody: Decodable {
    var content: String?
    var model: String?
    var temperature: Double?
    var topP: Double?
    var maxTokens: Int?
    var seed: Int64?
    /// Under `"model": "auto"`: the user asks for the larger model.
    var thinkHarder: Bool?
    enum CodingKeys: String, CodingKey {
        case content, model, temperature, seed, topP = "top_p", maxTokens = "max_tokens", thinkHarder = "think_harder"
    }
}

/// The conversations API the web page uses. Every route checks ownership through the store, which
/// treats another user's conversation as missing: 404, never 403, so ids leak nothing.
///
/// Reply streams (SSE) send, in order: `user_message` (the stored user message; not on regenerate),
/// `: ping` comments while the prompt is processed, `start` ({model, prompt_tokens, dropped_turns}),
/// `delta` ({content}) events, then `done` ({message, finish_reason}) or `error` ({error, message}).
struct ConversationsController: Sendable {
    let service: ChatService
    var store: any ChatStore { service.store }

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("me") { _, context in try await me(context: context) }
        group.get("conversations") { request, context in try await list(request, context: context) }
        group.post("conversations") { request, context in try await create(request, context: context) }
        group.get("conversations/:id") { _, context in try await get(context: context) }
        group.patch("conversations/:id") { request, context in try await rename(request, context: context) }
        group.delete("conversations/:id") { _, context in try await delete(context: context) }
        group.post("conversations/:id/messages") { request, context in try await postMessage(request, context: context) }
        group.post("conversations/:id/regenerate") { request, context in try await regenerate(request, context: context) }
        group.post("conversations/:id/stop") { _, context in try await stop(context: context) }
    }

    // MARK: Routes

    func me(context: ServerContext) async throws -> MeResponse {
        let user = try context.requireUser()
        // With two tiers, `auto` comes first: the page's default.
        let models = (service.catalog.tiers == nil ? [] : [EngineCatalog.autoModel]) + service.catalog.models.map(\.id)
        return MeResponse(
            id: user.userId, name: user.name, isAdmin: user.isAdmin, models: models,
            quota: try await service.quotas.status(userId: user.userId))
    }

    func list(_ request: Request, context: ServerContext) async throws -> ConversationListResponse {
        let user = try context.requireUser()
        let query = request.uri.queryParameters
        let limit = try Self.intParameter(query.get("limit"), name: "limit", default: 20, range: 1...100)
        let offset = try Self.intParameter(query.get("offset"), name: "offset", default: 0, range: 0...Int.max)
        let page = try await store.conversations(userId: user.userId, limit: limit, offset: offset)
        return ConversationListResponse(
            data: page.items.map { ConversationResponse($0) }, total: page.total, limit: limit,
            offset: offset, hasMore: offset + page.items.count < page.total)
    }

    static func intParameter(_ text: String?, name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text else { return value }
        guard let n = Int(text), range.contains(n) else {
            throw APIError.invalidRequest(
                "Query parameter '\(name)' must be an integer in \(range.lowerBound)...\(range.upperBound == Int.max ? "" : String(range.upperBound)); got '\(text)'.",
                param: name)
        }
        return n
    }

    func create(_ request: Request, context: ServerContext) async throws -> EditedResponse<ConversationResponse> {
        let user = try context.requireUser()
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        let body = try buffer.readableBytes == 0 ? CreateConversationBody() : decodeBody(CreateConversationBody.self, from: buffer)
        _ = try SamplingFields(maxTokens: body.maxTokens, temperature: body.temperature, topP: body.topP).validated()
        let model: String
        if let name = body.model, !name.isEmpty {
            model = name == EngineCatalog.autoModel ? name : try service.catalog.engine(named: name).modelInfo.id
        } else {
            model = service.catalog.models.first?.id ?? ""
        }
        if let system = body.systemPrompt, !system.isEmpty {
            let engine = try service.catalog.engine(named: model.isEmpty ? nil : model)
            let reserve = service.replyReserve(requested: body.maxTokens, contextLength: engine.modelInfo.contextLength)
            do {
                try HistoryWindow.checkSystemPrompt([ChatMessage(role: .system, content: system)], engine: engine, replyReserve: reserve)
            } catch let error as APIError { throw error } catch { throw APIError.from(engine: error) }
        }
        let title = body.title.map { ConversationTitle.from(firstMessage: $0) } ?? ConversationTitle.placeholder
        let settings = ConversationSettings(temperature: body.temperature, topP: body.topP, maxTokens: body.maxTokens)
        let now = Date()
        let conversation = try await store.createConversation(
            Conversation(
                id: "conv_" + randomHex(bytes: 12), userId: user.userId, title: title, model: model,
                settings: settings.encoded, createdAt: now, updatedAt: now),
            systemPrompt: body.systemPrompt)
        return EditedResponse(status: .created, response: ConversationResponse(conversation))
    }

    func owned(_ context: ServerContext) async throws -> (User, Conversation) {
        let user = try context.requireUser()
        let id = try context.parameters.require("id")
        guard let conversation = try await store.conversation(id: id, userId: user.userId) else { throw APIError.conversationNotFound }
        return (user, conversation)
    }

    func get(context: ServerContext) async throws -> ConversationResponse {
        let (_, conversation) = try await owned(context)
        let messages = try await store.messages(conversationId: conversation.id)
        return ConversationResponse(
            conversation, messages: messages,
            running: await service.registry.isRunning(conversationId: conversation.id))
    }

    func rename(_ request: Request, context: ServerContext) async throws -> ConversationResponse {
        let (user, conversation) = try await owned(context)
        let body = try decodeBody(
            RenameConversationBody.self, from: try await request.collectBody(limit: service.configuration.maxBodyBytes))
        let title = body.title.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !title.isEmpty, title.count <= 200 else {
            throw APIError.invalidRequest("'title' must have 1 to 200 characters.", param: "title")
        }
        guard let renamed = try await store.renameConversation(id: conversation.id, userId: user.userId, title: title) else {
            throw APIError.conversationNotFound
        }
        return ConversationResponse(renamed)
    }

    func delete(context: ServerContext) async throws -> ConversationDeletedResponse {
        let (user, conversation) = try await owned(context)
        _ = await service.registry.stop(conversationId: conversation.id)
        guard try await store.deleteConversation(id: conversation.id, userId: user.userId) else { throw APIError.conversationNotFound }
        if case .ready(let engines) = service.catalog.state {
            let (userId, id) = (user.userId, conversation.id)
            await Task.detached { for engine in engines { engine.forgetConversation(userId: userId, conversationId: id) } }.value
        }
        return ConversationDeletedResponse(id: conversation.id)
    }

    func stop(context: ServerContext) async throws -> StopResponse {
        let (_, conversation) = try await owned(context)
        let stopped = await service.registry.stop(conversationId: conversation.id)
        return StopResponse(id: conversation.id, stopped: stopped)
    }

    func postMessage(_ request: Request, context: ServerContext) async throws -> Response {
        let (user, conversation) = try await owned(context)
        let body = try decodeBody(ReplyBody.self, from: try await request.collectBody(limit: service.configuration.maxBodyBytes))
        guard let content = body.content, !content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw APIError.invalidRequest("'content' must be a non-empty string.", param: "content")
        }
        let stored = try await store.messages(conversationId: conversation.id)
        var plan = try makePlan(
            conversation: conversation,
            history: stored.map { $0 } + [StoredMessage(conversationId: conversation.id, role: .user, content: content)], body: body,
            requestId: context.id)
        if let left = try await service.quotas.admit(userId: user.userId) { plan.request.maxTokens = min(plan.request.maxTokens, left) }
        let ticket = try await service.registry.admit(userId: user.userId, conversationId: conversation.id)
        // The user's message and the reply's row are committed before generation starts.
        let userMessage: StoredMessage
        let reply: StoredMessage
        do {
            let ownTokens = (try? plan.engine.countTokens([ChatMessage(role: .user, content: content)])).map {
                $0 - ((try? plan.engine.countTokens([])) ?? 0)
            }
            userMessage = try await store.appendMessage(
                StoredMessage(conversationId: conversation.id, role: .user, content: content, tokenCount: ownTokens))
            reply = try await store.appendMessage(Self.replyRow(plan: plan, conversation: conversation))
        } catch {
            await service.registry.finish(ticket)
            throw error
        }
        let (stream, cacheHit) = try await start(plan, ticket: ticket, discarding: [reply, userMessage])
        var response = streamReply(
            plan: plan, stream: stream, conversation: conversation, ticket: ticket, userMessage: userMessage, reply: reply,
            context: context)
        if cacheHit { response.headers[.sarvamCache] = "hit" }
        return response
    }

    func regenerate(_ request: Request, context: ServerContext) async throws -> Response {
        let (user, conversation) = try await owned(context)
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        let body = try buffer.readableBytes == 0 ? ReplyBody() : decodeBody(ReplyBody.self, from: buffer)
        var stored = try await store.messages(conversationId: conversation.id)
        var replaced: StoredMessage?
        if stored.last?.role == .assistant { replaced = stored.removeLast() }
        guard stored.last?.role == .user else {
            throw APIError.invalidRequest("Nothing to regenerate: the conversation does not end with a user message.")
        }
        var plan = try makePlan(conversation: conversation, history: stored, body: body, requestId: context.id)
        if let left = try await service.quotas.admit(userId: user.userId) { plan.request.maxTokens = min(plan.request.maxTokens, left) }
        let ticket = try await service.registry.admit(userId: user.userId, conversationId: conversation.id)
        let reply: StoredMessage
        do { reply = try await store.appendMessage(Self.replyRow(plan: plan, conversation: conversation)) } catch {
            await service.registry.finish(ticket)
            throw error
        }
        let (stream, cacheHit) = try await start(plan, ticket: ticket, discarding: [reply])
        if let id = replaced?.id {
            do { try await store.deleteMessage(id: id) } catch {
                abandon(stream)
                try? await store.deleteMessage(id: reply.id ?? 0)
                await service.registry.finish(ticket)
                throw error
            }
        }
        var response = streamReply(
            plan: plan, stream: stream, conversation: conversation, ticket: ticket, userMessage: nil, reply: reply, context: context)
        if cacheHit { response.headers[.sarvamCache] = "hit" }
        return response
    }

    /// Starts the generation. Refused (busy, too long), nothing was generated and the client is told
    /// so: the rows stored for it are deleted.
    private func start(
        _ plan: Plan, ticket: GenerationRegistry.Ticket, discarding rows: [StoredMessage]
    ) async throws
        -> (stream: AsyncThrowingStream<GenerationEvent, Error>, cacheHit: Bool)
    {
        do {
            return try await startGeneration(engine: plan.engine, request: plan.request, ticket: ticket, registry: service.registry)
        } catch {
            for row in rows { try? await store.deleteMessage(id: row.id ?? 0) }
            throw error
        }
    }

    /// The reply's row before its first token: empty and `interrupted` until the generation ends.
    static func replyRow(plan: Plan, conversation: Conversation) -> StoredMessage {
        StoredMessage(
            conversationId: conversation.id, role: .assistant, content: "", status: .interrupted,
            droppedTurns: plan.fitted.droppedTurns, model: plan.engine.modelInfo.id)
    }

    // MARK: Generation

    struct Plan: Sendable {
        var engine: any ChatEngine
        var fitted: HistoryWindow.Fitted
        var request: GenerationRequest
    }

    /// Model, sampling and the history window for a reply; throws the 400/404/503 before anything is stored.
    func makePlan(conversation: Conversation, history: [StoredMessage], body: ReplyBody, requestId: String) throws -> Plan {
        let settings = ConversationSettings.decode(conversation.settings)
        let maxTokens = body.maxTokens ?? settings.maxTokens
        let sampling = try SamplingFields(
            maxTokens: maxTokens, temperature: body.temperature ?? settings.temperature,
            topP: body.topP ?? settings.topP, seed: body.seed
        ).validated()
        // What the model sees: replies the user saw (complete or interrupted), never failed ones.
        let messages = history.filter { $0.status != .error && !($0.role == .assistant && $0.content.isEmpty) }.map(\.chatMessage)
        let engine: any ChatEngine
        let requested = body.model.flatMap { $0.isEmpty ? nil : $0 } ?? conversation.model
        if requested == EngineCatalog.autoModel {
            let choice = try service.selectEngine(
                model: requested, messages: messages, previousModel: history.last(where: { $0.role == .assistant })?.model,
                thinkHarder: body.thinkHarder ?? false)
            RequestStats.current?.noteRoute(choice)
            engine = choice.engine
        } else if let name = body.model, !name.isEmpty {
            engine = try service.catalog.engine(named: name)
        } else {
            do {
                engine = try service.catalog.engine(named: conversation.model)
            } catch let error as APIError where error.status == .badGateway {
                throw error  // an upstream's model, the upstream down for now: say so rather than switch models
            } catch {
                engine = try service.catalog.engine(named: nil)  // the conversation's model is gone: use the default
            }
        }
        let context = engine.modelInfo.contextLength
        let reserve = service.replyReserve(requested: maxTokens, contextLength: context)
        let fitted: HistoryWindow.Fitted
        do { fitted = try HistoryWindow.fit(messages, engine: engine, replyReserve: reserve) } catch let error as APIError {
            throw error
        } catch {
            throw APIError.from(engine: error)
        }
        let room = context - fitted.promptTokens
        let request = GenerationRequest(
            messages: fitted.messages, maxTokens: min(maxTokens ?? room, room), sampling: sampling,
            userId: conversation.userId, conversationId: conversation.id, requestId: requestId)
        return Plan(engine: engine, fitted: fitted, request: request)
    }

    func streamReply(
        plan: Plan, stream: AsyncThrowingStream<GenerationEvent, Error>, conversation: Conversation, ticket: GenerationRegistry.Ticket,
        userMessage: StoredMessage?, reply: StoredMessage,
        context: ServerContext
    ) -> Response {
        let registry = service.registry
        let store = self.store
        let stats = context.stats
        let pingInterval = service.configuration.pingInterval
        let flushInterval = service.configuration.replyFlushInterval
        let logger = context.logger
        let modelId = plan.engine.modelInfo.id
        let dropped = plan.fitted.droppedTurns
        return sseResponse { write in
            let journal = ReplyJournal(reply: reply, store: store, logger: logger)
            journal.startFlushing(every: flushInterval)
            var outcome: GenerationOutcome?
            var storedReply: StoredMessage?
            do {
                if let userMessage { try await write(SSE.event("user_message", MessageResponse(userMessage))) }
                let result = await driveGeneration(
                    stream: stream, stops: [], pingInterval: pingInterval,
                    registerCancel: { await registry.attach(ticket, cancel: $0) },
                    emit: { output in
                        switch output {
                        case .ping: try await write(SSE.ping)
                        case .promptProcessed(let n):
                            journal.promptProcessed(tokens: n)
                            try await write(SSE.event("start", ReplyEvent.Start(model: modelId, promptTokens: n, droppedTurns: dropped)))
                        case .text(let text, _):
                            journal.append(text)
                            try await write(SSE.event("delta", ReplyEvent.Delta(content: text)))
                        }
                    })
                outcome = result
            } catch {
                // Only the first write can get here (the client left at once): the generation never ran.
                abandon(stream)
            }
            // The reply is stored whatever happened to the client; one that showed nothing is removed.
            var finished = reply
            if let result = outcome {
                var status = result.status
                if status == .interrupted, await registry.wasStopped(ticket) { status = .stopped }
                finished.content = result.text
                finished.status = status
                finished.tokenCount = result.completionTokens
                finished.promptTokens = result.promptTokens
                finished.generationSeconds = result.promptDoneAt == nil ? nil : result.generationSeconds
                finished.finishReason = result.finishReason?.rawValue
                finished.error = result.error?.message
            }
            do {
                storedReply = try await uncancelled { [finished] in try await journal.finish(finished) }
            } catch {
                // The row keeps the last flush, marked interrupted.
                logger.error("could not store the reply", metadata: ["conversation": "\(conversation.id)", "error": "\(error)"])
            }
            await registry.finish(ticket)
            guard let outcome else { return }
            // A first reply that completed: the model names the conversation later (`TitleJobs`).
            if userMessage != nil, conversation.title == ConversationTitle.placeholder, storedReply?.status == .complete {
                do { try await TitleJobs.enqueue(store: store, userId: conversation.userId, conversationId: conversation.id) } catch {
                    logger.warning("could not queue the title job", metadata: ["conversation": "\(conversation.id)", "error": "\(error)"])
                }
            }
            stats.record(usage: outcome.usage, outcome: outcome.status.rawValue)
            let message = storedReply.map(MessageResponse.init)
            if let error = outcome.error {
                try await write(SSE.event("error", ReplyEvent.Failure(error: error.body.error, message: message)))
            } else {
                try await write(
                    SSE.event(
                        "done",
                        ReplyEvent.Done(
                            message: message, finishReason: outcome.finishReason,
                            interrupted: outcome.interrupted)))
            }
        }
    }
}
