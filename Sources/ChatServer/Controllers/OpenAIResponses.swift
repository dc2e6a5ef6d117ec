import Foundation

// The bodies of `/v1`, as OpenAI's API writes them: `logprobs` is always there (null unless asked
// for), `system_fingerprint` always null, a chunk's `finish_reason` null until its choice's last chunk.

/// `GET /v1/models`.
struct ModelListResponse: APIResponse {
    struct Model: Encodable {
        var id: String
        var object = "model"
        var created: Int
        var ownedBy: String
        /// Ours: clients size prompts with it.
        var contextLength: Int
        enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by", contextLength = "context_length" }

        init(_ info: ModelInfo) {
            id = info.id
            created = info.created
            ownedBy = info.ownedBy
            contextLength = info.contextLength
        }
    }

    var object = "list"
    var data: [Model]
}

/// OpenAI's `usage` object.
struct UsageResponse: Encodable {
    struct PromptTokensDetails: Encodable {
        /// Prompt tokens served from the prefix cache.
        var cachedTokens: Int
        enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
    }

    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int
    var promptTokensDetails: PromptTokensDetails
    /// true when the reply came whole from the response cache (absent otherwise).
    var cachedResponse: Bool?
    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
        case promptTokensDetails = "prompt_tokens_details", cachedResponse = "cached_response"
    }

    init(_ usage: GenerationUsage) {
        promptTokens = usage.promptTokens
        completionTokens = usage.completionTokens
        totalTokens = usage.totalTokens
        promptTokensDetails = PromptTokensDetails(cachedTokens: usage.cachedPromptTokens)
        cachedResponse = usage.cachedResponse ? true : nil
    }
}

/// `POST /v1/chat/completions` without `stream`: the whole reply.
struct ChatCompletionResponse: APIResponse {
    struct Choice: Encodable {
        struct Message: Encodable {
            var role = "assistant"
            var content: String
        }
        var index = 0
        var message: Message
        var finishReason: FinishReason
        var logprobs: ChatLogprobs?
        enum CodingKeys: String, CodingKey { case index, message, logprobs, finishReason = "finish_reason" }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(message, forKey: .message)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finishReason, forKey: .finishReason)
        }
    }

    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: UsageResponse
    enum CodingKeys: String, CodingKey { case id, object, created, model, choices, usage, systemFingerprint = "system_fingerprint" }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        try c.encode(choices, forKey: .choices)
        try c.encode(usage, forKey: .usage)
        try c.encodeNil(forKey: .systemFingerprint)
    }
}

/// One `data:` event of a streamed completion. The first chunk's delta carries the role, the next
/// ones text, the last choice chunk an empty delta and the finish reason; with
/// `stream_options.include_usage` a final chunk has no choices and the usage.
struct ChatCompletionChunk: Encodable {
    struct Delta: Encodable {
        /// Absent keys are left out: `{"role": "assistant", "content": ""}`, `{"content": ...}`, `{}`.
        var role: String?
        var content: String?
    }
    struct Choice: Encodable {
        var index = 0
        var delta: Delta
        var finishReason: FinishReason?
        var logprobs: ChatLogprobs?
        enum CodingKeys: String, CodingKey { case index, delta, logprobs, finishReason = "finish_reason" }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finishReason, forKey: .finishReason)
        }
    }

    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [Choice]
    /// Only on the usage chunk.
    var usage: UsageResponse?
    enum CodingKeys: String, CodingKey { case id, object, created, model, choices, usage, systemFingerprint = "system_fingerprint" }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        try c.encodeNil(forKey: .systemFingerprint)
        try c.encode(choices, forKey: .choices)
        try c.encodeIfPresent(usage, forKey: .usage)
    }
}

/// A chat choice's `logprobs`: `{"content": [...], "refusal": null}`.
struct ChatLogprobs: Encodable {
    struct Alternative: Encodable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
    }
    struct Entry: Encodable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
        var topLogprobs: [Alternative]
        enum CodingKeys: String, CodingKey { case token, logprob, bytes, topLogprobs = "top_logprobs" }
    }
    var content: [Entry]
    enum CodingKeys: String, CodingKey { case content, refusal }

    init(_ entries: [TokenLogprobs], engine: any ChatEngine) {
        func alternative(_ token: Int, _ logprob: Float) -> Alternative {
            let bytes = engine.tokenBytes(token)
            return Alternative(token: tokenString(bytes), logprob: finiteLogprob(logprob), bytes: bytes)
        }
        content = entries.map { e in
            let chosen = alternative(e.token, e.logprob)
            return Entry(
                token: chosen.token, logprob: chosen.logprob, bytes: chosen.bytes,
                topLogprobs: e.top.map { alternative($0.token, $0.logprob) })
        }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(content, forKey: .content)
        try c.encodeNil(forKey: .refusal)
    }
}
