import Foundation

// The bodies of `/api` (the web page's API). Every field of a conversation, its settings and a
// message is always present; what is unknown is `null`, so the page never tells a missing key
// from an empty value. Times are Unix seconds.

/// A conversation. `GET /api/conversations/:id` adds `messages` and `running`; elsewhere they are left out.
struct ConversationResponse: APIResponse {
    var id: String
    var title: String
    var model: String
    var settings: ConversationSettings
    var createdAt: Int
    var updatedAt: Int
    var messages: [MessageResponse]?
    /// A reply is being generated for it right now.
    var running: Bool?

    init(_ c: Conversation, messages: [StoredMessage]? = nil, running: Bool? = nil) {
        id = c.id
        title = c.title
        model = c.model
        settings = ConversationSettings.decode(c.settings)
        createdAt = Int(c.createdAt.timeIntervalSince1970)
        updatedAt = Int(c.updatedAt.timeIntervalSince1970)
        self.messages = messages?.map(MessageResponse.init)
        self.running = running
    }

    enum CodingKeys: String, CodingKey {
        case id, object, title, model, settings, messages, running, createdAt = "created_at", updatedAt = "updated_at"
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode("conversation", forKey: .object)
        try c.encode(title, forKey: .title)
        try c.encode(model, forKey: .model)
        // Not `ConversationSettings`' own encoding: that one is what the database stores, without nulls.
        var s = c.nestedContainer(keyedBy: ConversationSettings.CodingKeys.self, forKey: .settings)
        try s.encode(settings.temperature, forKey: .temperature)
        try s.encode(settings.topP, forKey: .topP)
        try s.encode(settings.maxTokens, forKey: .maxTokens)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encodeIfPresent(messages, forKey: .messages)
        try c.encodeIfPresent(running, forKey: .running)
    }
}

/// A stored message. The reply fields (`prompt_tokens` ... `error`) are null on user messages.
struct MessageResponse: Encodable, Sendable {
    var id: Int64
    var role: String
    var content: String
    var status: String
    var tokenCount: Int?
    var promptTokens: Int?
    var generationSeconds: Double?
    /// Completion tokens over generation seconds, two decimals; null without either.
    var tokensPerSecond: Double?
    var finishReason: String?
    var droppedTurns: Int?
    var model: String?
    var error: String?
    var createdAt: Int

    init(_ m: StoredMessage) {
        id = m.id ?? 0
        role = m.role.rawValue
        content = m.content
        status = m.status.rawValue
        tokenCount = m.tokenCount
        promptTokens = m.promptTokens
        generationSeconds = m.generationSeconds
        if let seconds = m.generationSeconds, seconds > 0, let n = m.tokenCount, n > 0 {
            tokensPerSecond = (Double(n) / seconds * 100).rounded() / 100
        }
        finishReason = m.finishReason
        droppedTurns = m.droppedTurns
        model = m.model
        error = m.error
        createdAt = Int(m.createdAt.timeIntervalSince1970)
    }

    enum CodingKeys: String, CodingKey {
        case id, role, content, status, model, error
        case tokenCount = "token_count", promptTokens = "prompt_tokens", generationSeconds = "generation_seconds"
        case tokensPerSecond = "tokens_per_second", finishReason = "finish_reason", droppedTurns = "dropped_turns"
        case createdAt = "created_at"
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(role, forKey: .role)
        try c.encode(content, forKey: .content)
        try c.encode(status, forKey: .status)
        try c.encode(tokenCount, forKey: .tokenCount)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(generationSeconds, forKey: .generationSeconds)
        try c.encode(tokensPerSecond, forKey: .tokensPerSecond)
        try c.encode(finishReason, forKey: .finishReason)
        try c.encode(droppedTurns, forKey: .droppedTurns)
        try c.encode(model, forKey: .model)
        try c.encode(error, forKey: .error)
        try c.encode(createdAt, forKey: .createdAt)
    }
}

/// `GET /api/conversations`: a page, newest first.
struct ConversationListResponse: APIResponse {
    var object = "list"
    var data: [ConversationResponse]
    var total: Int
    var limit: Int
    var offset: Int
    var hasMore: Bool
    enum CodingKeys: String, CodingKey { case object, data, total, limit, offset, hasMore = "has_more" }
}

/// `GET /api/me`: who the key belongs to and the models it may use.
struct MeResponse: APIResponse {
    var id: Int64
    var name: String
    var isAdmin: Bool
    var models: [String]
    /// The user's limits (null: none) and use in the current minute and UTC day.
    var quota: QuotaStatus
    enum CodingKeys: String, CodingKey { case id, name, models, quota, isAdmin = "is_admin" }
}

/// `DELETE /api/conversations/:id`.
struct ConversationDeletedResponse: APIResponse {
    var id: String
    var object = "conversation.deleted"
    var deleted = true
}

/// `POST /api/conversations/:id/stop`: whether a running reply was stopped.
struct StopResponse: APIResponse {
    var id: String
    var stopped: Bool
}

/// The `data:` of each event of a reply stream, by event name (the order is in `ConversationsController`).
enum ReplyEvent {
    /// `start`: the prompt is processed.
    struct Start: Encodable {
        var model: String
        var promptTokens: Int
        var droppedTurns: Int
        enum CodingKeys: String, CodingKey { case model, promptTokens = "prompt_tokens", droppedTurns = "dropped_turns" }
    }

    /// `delta`: text to append.
    struct Delta: Encodable {
        var content: String
    }

    /// `done`: the stored reply (null when nothing was stored) and how it ended.
    struct Done: Encodable {
        var message: MessageResponse?
        var finishReason: FinishReason?
        var interrupted: Bool
        enum CodingKeys: String, CodingKey { case message, interrupted, finishReason = "finish_reason" }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(message, forKey: .message)
            try c.encode(finishReason, forKey: .finishReason)
            try c.encode(interrupted, forKey: .interrupted)
        }
    }

    /// `error`: what failed, as an API error, and the stored reply (null when nothing was stored).
    struct Failure: Encodable {
        var error: APIError.Body.Detail
        var message: MessageResponse?
        enum CodingKeys: String, CodingKey { case error, message }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(error, forKey: .error)
            try c.encode(message, forKey: .message)
        }
    }
}
