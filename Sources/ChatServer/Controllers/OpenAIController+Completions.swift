import Foundation
import Hummingbird

extension OpenAIController {
    /// OpenAI's default reply length for `/v1/completions` when `max_tokens` is left out.
    static let defaultCompletionTokens = 16

    /// `POST /v1/completions`: the prompt is fed as it is, with no chat template. A string prompt
    /// is a user's text (special-token text stays text); token ids are taken as they are, each
    /// within the vocabulary.
    func completions(_ request: Request, context: ServerContext) async throws -> Response {
        let user = try context.requireUser()
        let buffer = try await request.collectBody(limit: service.configuration.maxBodyBytes)
        try OpenAIFields.check(Data(buffer.readableBytesView), supported: OpenAIFields.completions)
        let body = try decodeBody(CompletionRequest.self, from: buffer)
        let options = try OpenAIOptions.check(
            maxTokens: body.maxTokens, maxTokensField: "max_tokens", temperature: body.temperature, topP: body.topP,
            seed: body.seed, presencePenalty: body.presencePenalty, frequencyPenalty: body.frequencyPenalty,
            stop: body.stop?.values, n: body.n, ignoreEOS: body.ignoreEOS, minTokens: body.minTokens,
            logprobs: body.logprobs, logprobsField: "logprobs", stream: body.stream,
            includeUsage: body.streamOptions?.includeUsage)

        let engine = try service.catalog.engine(named: body.model)
        let info = engine.modelInfo
        let prompt: [Int]
        switch body.prompt {
        case .text(let text):
            do { prompt = try engine.tokenize(text, addSpecial: true) } catch { throw APIError.from(engine: error) }
        case .tokens(let ids):
            let vocabulary = engine.vocabularySize
            if case let (i, bad)? = ids.enumerated().first(where: { $0.element < 0 || $0.element >= vocabulary }) {
                throw APIError.invalidRequest(
                    "prompt[\(i)] = \(bad) is not a token id of this model (0..<\(vocabulary)).", param: "prompt")
            }
            prompt = ids
        }
        if prompt.isEmpty { throw APIError.invalidRequest("'prompt' is empty; expected at least one token.", param: "prompt") }
        var limited = options
        if limited.maxTokens == nil { limited.maxTokens = min(Self.defaultCompletionTokens, max(1, info.contextLength - prompt.count)) }
        let maxTokens = try Self.replyLimit(limited, promptTokens: prompt.count, contextLength: info.contextLength, param: "prompt")
        let runner = try await ChoiceRunner.start(
            options.requests(messages: [], promptTokens: prompt, maxTokens: maxTokens, userId: user.userId, requestId: context.id),
            engine: engine, service: service)
        let id = "cmpl-" + randomHex(bytes: 12)
        let created = Int(Date().timeIntervalSince1970)
        let stats = context.stats
        let wantsLogprobs = options.logprobs != nil

        guard options.stream else {
            let outcomes = try await runner.driveWhole(
                stops: options.stops, minTokens: options.minTokens, stats: stats, channel: context.channel)
            let choices = outcomes.enumerated().map { i, outcome in
                CompletionResponse.Choice(
                    index: i, text: outcome.text,
                    logprobs: wantsLogprobs ? CompletionLogprobs(outcome.logprobs, engine: engine, offset: 0) : nil,
                    finishReason: outcome.finishReason)
            }
            var response = try jsonResponse(
                CompletionResponse(
                    id: id, created: created, model: info.id, choices: choices, usage: UsageResponse(combinedUsage(outcomes))))
            if runner.cacheHit { response.headers[.sarvamCache] = "hit" }
            return response
        }

        @Sendable func chunk(_ choice: CompletionResponse.Choice) -> CompletionResponse {
            CompletionResponse(id: id, created: created, model: info.id, choices: [choice])
        }
        // Characters sent so far per choice: the legacy logprobs' text offsets continue across chunks.
        let offsets = OffsetBox(count: options.n)
        var response = sseResponse { write in
            let outcomes = await runner.drive(stops: options.stops, minTokens: options.minTokens, stats: stats) { index, output in
                switch output {
                case .ping: try await write(SSE.ping)
                case .promptProcessed: break
                case .text(let text, let entries):
                    let logprobs = wantsLogprobs ? CompletionLogprobs(entries, engine: engine, offset: offsets.take(index, text)) : nil
                    try await write(SSE.data(chunk(.init(index: index, text: text, logprobs: logprobs, finishReason: nil))))
                }
            }
            for (index, outcome) in outcomes.enumerated() {
                if let finish = outcome.finishReason {
                    try await write(SSE.data(chunk(.init(index: index, text: "", logprobs: nil, finishReason: finish))))
                }
            }
            if let error = unfinishedError(outcomes) {
                try await write(SSE.data(error.body))
            } else if options.includeUsage {
                try await write(
                    SSE.data(
                        CompletionResponse(
                            id: id, created: created, model: info.id, choices: [], usage: UsageResponse(combinedUsage(outcomes)))))
            }
            try await write(SSE.done)
        }
        if runner.cacheHit { response.headers[.sarvamCache] = "hit" }
        return response
    }
}

/// Characters emitted per choice (the writes of one stream are serialized; the lock keeps Swift's
/// checker and any future caller honest).
private final class OffsetBox: @unchecked Sendable {
    private let lock = NSLock()
    private var sent: [Int]
    init(count: Int) { sent = Array(repeating: 0, count: count) }

    /// The offset before `text`, then counts it.
    func take(_ index: Int, _ text: String) -> Int {
        lock.withLock {
            let before = sent[index]
            sent[index] += text.count
            return before
        }
    }
}
