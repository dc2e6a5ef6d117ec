import Foundation

/// `POST /v1/completions` body (OpenAI's legacy completions, as vLLM and llama.cpp serve them).
struct CompletionRequest: Decodable, Sendable {
    /// A string, token ids, or a list holding exactly one of either.
    enum Prompt: Sendable {
        case text(String)
        case tokens([Int])
    }

    var model: String?
    var prompt: Prompt
    var stream: Bool?
    var streamOptions: ChatCompletionRequest.StreamOptions?
    var maxTokens: Int?
    var temperature: Double?
    var topP: Double?
    var seed: Int64?
    var stop: ChatCompletionRequest.Stop?
    var n: Int?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var logprobs: Int?
    var ignoreEOS: Bool?
    var minTokens: Int?

    enum CodingKeys: String, CodingKey {
        case model, prompt, stream, temperature, seed, stop, n, logprobs
        case maxTokens = "max_tokens", topP = "top_p", streamOptions = "stream_options"
        case presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty"
        case ignoreEOS = "ignore_eos", minTokens = "min_tokens"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream)
        streamOptions = try c.decodeIfPresent(ChatCompletionRequest.StreamOptions.self, forKey: .streamOptions)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        topP = try c.decodeIfPresent(Double.self, forKey: .topP)
        seed = try c.decodeIfPresent(Int64.self, forKey: .seed)
        stop = try c.decodeIfPresent(ChatCompletionRequest.Stop.self, forKey: .stop)
        n = try c.decodeIfPresent(Int.self, forKey: .n)
        presencePenalty = try c.decodeIfPresent(Double.self, forKey: .presencePenalty)
        frequencyPenalty = try c.decodeIfPresent(Double.self, forKey: .frequencyPenalty)
        logprobs = try c.decodeIfPresent(Int.self, forKey: .logprobs)
        ignoreEOS = try c.decodeIfPresent(Bool.self, forKey: .ignoreEOS)
        minTokens = try c.decodeIfPresent(Int.self, forKey: .minTokens)

        func mismatch(_ what: String) -> DecodingError {
            .typeMismatch(String.self, .init(codingPath: c.codingPath + [CodingKeys.prompt], debugDescription: what))
        }
        if let text = try? c.decode(String.self, forKey: .prompt) {
            prompt = .text(text)
        } else if let ids = try? c.decode([Int].self, forKey: .prompt) {
            prompt = .tokens(ids)
        } else if let texts = try? c.decode([String].self, forKey: .prompt) {
            guard texts.count == 1 else { throw APIError.onePrompt(texts.count) }
            prompt = .text(texts[0])
        } else if let lists = try? c.decode([[Int]].self, forKey: .prompt) {
            guard lists.count == 1 else { throw APIError.onePrompt(lists.count) }
            prompt = .tokens(lists[0])
        } else if c.contains(.prompt) {
            throw mismatch("expected a string or an array of token ids")
        } else {
            throw DecodingError.keyNotFound(CodingKeys.prompt, .init(codingPath: c.codingPath, debugDescription: "missing"))
        }
    }
}

extension APIError {
    static func onePrompt(_ count: Int) -> APIError {
        .invalidRequest("'prompt' takes one prompt per request; got a list of \(count).", param: "prompt")
    }
}

/// `POST /v1/completions` without `stream`, and (with `object` "text_completion" too) each
/// streamed chunk: OpenAI sends the same shape both ways.
struct CompletionResponse: APIResponse {
    struct Choice: Encodable {
        var index: Int
        var text: String
        var logprobs: CompletionLogprobs?
        var finishReason: FinishReason?
        enum CodingKeys: String, CodingKey { case index, text, logprobs, finishReason = "finish_reason" }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(text, forKey: .text)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finishReason, forKey: .finishReason)
        }
    }

    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [Choice]
    /// Always on the whole reply; on a stream only the last chunk with `stream_options.include_usage`.
    var usage: UsageResponse?
    enum CodingKeys: String, CodingKey { case id, object, created, model, choices, usage, systemFingerprint = "system_fingerprint" }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        try c.encode(choices, forKey: .choices)
        try c.encodeIfPresent(usage, forKey: .usage)
        try c.encodeNil(forKey: .systemFingerprint)
    }
}

/// The legacy completions `logprobs` object: parallel lists, one entry per token.
struct CompletionLogprobs: Encodable {
    var tokens: [String] = []
    var tokenLogprobs: [Float] = []
    /// Per token: the most likely alternatives and the chosen token, by token text.
    var topLogprobs: [[String: Float]] = []
    /// Character offset of each token in the completion text.
    var textOffset: [Int] = []
    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    /// `entries` as text through `engine`, offsets counted from `offset` characters.
    init(_ entries: [TokenLogprobs], engine: any ChatEngine, offset: Int) {
        var at = offset
        for e in entries {
            let token = tokenString(engine.tokenBytes(e.token))
            tokens.append(token)
            tokenLogprobs.append(finiteLogprob(e.logprob))
            var top: [String: Float] = [:]
            for alt in e.top { top[tokenString(engine.tokenBytes(alt.token))] = finiteLogprob(alt.logprob) }
            top[token] = finiteLogprob(e.logprob)
            topLogprobs.append(top)
            textOffset.append(at)
            at += token.count
        }
    }
}

/// A token's bytes as text; bytes that are part of a character split over tokens become U+FFFD.
func tokenString(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// JSON has no infinities: a logprob of −∞ (a token with no chance) is sent as −9999, as vLLM does.
func finiteLogprob(_ x: Float) -> Float { x.isFinite ? x : -9999 }
