import Foundation

/// What `/v1/chat/completions` and `/v1/completions` share once checked: sampling, stop strings,
/// choices, log-probabilities, vLLM's length controls and the stream settings.
struct OpenAIOptions: Sendable {
    /// Choices per request at most (each is a sequence in the engine).
    static let maxChoices = 4
    /// Alternatives per token at most (OpenAI's limit for `top_logprobs`).
    static let maxTopLogprobs = 20

    var sampling: SamplingParameters
    var stops: [String]
    /// What the client asked for (nil: up to the context, or the route's default).
    var maxTokens: Int?
    var n: Int
    var ignoreEOS: Bool
    var minTokens: Int
    /// Alternatives per token; nil: no log-probabilities.
    var logprobs: Int?
    var stream: Bool
    var includeUsage: Bool

    /// Generation requests, one per choice; with a seed, choice i uses seed + i so that the choices
    /// differ yet repeat.
    func requests(
        messages: [ChatMessage], promptTokens: [Int]?, maxTokens: Int, userId: Int64, requestId: String
    ) -> [GenerationRequest] {
        (0..<n).map { i in
            var s = sampling
            s.seed = s.seed.map { $0 &+ UInt64(i) }
            var r = GenerationRequest(messages: messages, maxTokens: maxTokens, sampling: s, userId: userId, requestId: requestId)
            r.promptTokens = promptTokens
            r.ignoreEOS = ignoreEOS
            r.minTokens = minTokens
            r.logprobs = logprobs
            return r
        }
    }

    /// Checks the shared fields; `maxTokensField` names the field `maxTokens` came from.
    static func check(
        maxTokens: Int?, maxTokensField: String, temperature: Double?, topP: Double?, seed: Int64?,
        presencePenalty: Double?, frequencyPenalty: Double?, stop: [String]?, n: Int?, ignoreEOS: Bool?, minTokens: Int?,
        logprobs: Int?, logprobsField: String, stream: Bool?, includeUsage: Bool?
    ) throws -> OpenAIOptions {
        if let m = maxTokens, m < 1 {
            throw APIError.invalidRequest("\(maxTokensField) must be at least 1; got \(m).", param: maxTokensField)
        }
        let sampling = try SamplingFields(
            maxTokens: nil, temperature: temperature, topP: topP, seed: seed,
            presencePenalty: presencePenalty, frequencyPenalty: frequencyPenalty
        ).validated()
        let stops = stop ?? []
        if stops.count > 4 { throw APIError.invalidRequest("'stop' takes at most 4 sequences; got \(stops.count).", param: "stop") }
        if stops.contains(where: \.isEmpty) { throw APIError.invalidRequest("'stop' sequences must not be empty.", param: "stop") }
        let n = n ?? 1
        if !(1...maxChoices).contains(n) {
            throw APIError.invalidRequest("n must be between 1 and \(maxChoices); got \(n).", param: "n")
        }
        let minTokens = minTokens ?? 0
        if minTokens < 0 { throw APIError.invalidRequest("min_tokens must be at least 0; got \(minTokens).", param: "min_tokens") }
        if let maxTokens, minTokens > maxTokens {
            throw APIError.invalidRequest(
                "min_tokens (\(minTokens)) must not exceed \(maxTokensField) (\(maxTokens)).", param: "min_tokens")
        }
        if let k = logprobs, !(0...maxTopLogprobs).contains(k) {
            throw APIError.invalidRequest("\(logprobsField) must be between 0 and \(maxTopLogprobs); got \(k).", param: logprobsField)
        }
        if includeUsage != nil && stream != true {
            throw APIError.invalidRequest("'stream_options' is only allowed with stream: true.", param: "stream_options")
        }
        return OpenAIOptions(
            sampling: sampling, stops: stops, maxTokens: maxTokens, n: n, ignoreEOS: ignoreEOS ?? false, minTokens: minTokens,
            logprobs: logprobs, stream: stream ?? false, includeUsage: includeUsage ?? false)
    }
}
