import Foundation
import Transformer

// The narrow seam between the HTTP server and a model engine. The server knows messages and text;
// the engine (the adapter over Transformer + Tokenizer and its engine loop) knows
// templates, tokens and sampling. Everything here is a plain value so the seam stays testable.

/// What `/v1/models` shows about one loaded model.
public struct ModelInfo: Sendable, Equatable, Codable {
    /// The name clients pass as `model` (e.g. the weight file's stem).
    public var id: String
    /// Tokens of prompt + reply the engine can hold for one sequence.
    public var contextLength: Int
    public var ownedBy: String
    /// Seconds since 1970 when the model was loaded (OpenAI's `created`).
    public var created: Int
    /// The model's weights (orders tiers: the smallest local model is the light one); nil: unknown.
    public var parameters: Int?

    public init(
        id: String, contextLength: Int, ownedBy: String = "sarvam", created: Int = Int(Date().timeIntervalSince1970),
        parameters: Int? = nil
    ) {
        self.parameters = parameters
        self.id = id
        self.contextLength = contextLength
        self.ownedBy = ownedBy
        self.created = created
    }
}

/// One chat turn as the chat template sees it.
public struct ChatMessage: Sendable, Equatable, Codable {
    public enum Role: String, Sendable, Codable, CaseIterable {
        case system, user, assistant
    }
    public var role: Role
    public var content: String

    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
}

/// Sampling settings as the client sent them; `nil` means "the engine's default".
public struct SamplingParameters: Sendable, Equatable {
    public var temperature: Double?
    public var topP: Double?
    public var seed: UInt64?
    public var presencePenalty: Double
    public var frequencyPenalty: Double

    public init(
        temperature: Double? = nil, topP: Double? = nil, seed: UInt64? = nil,
        presencePenalty: Double = 0, frequencyPenalty: Double = 0
    ) {
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
    }
}

/// One generation the server asks of the engine.
///
/// Stop *strings* are handled by the server (`StopSequenceMatcher`), not the engine: the engine stops
/// on its end-of-turn tokens, on `maxTokens`, or when the consumer goes away.
public struct GenerationRequest: Sendable {
    public var messages: [ChatMessage]
    /// Upper bound on generated tokens (already clamped by the server to the context left).
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Who asks: the engine loop uses it for per-user fairness.
    public var userId: Int64
    /// The stored conversation it continues (nil for the OpenAI API): the engine's KV snapshots of
    /// it are deleted with it.
    public var conversationId: String?
    /// The HTTP request id, for the engine's logs.
    public var requestId: String
    /// Prompt token ids fed as they are, without the chat template (`/v1/completions`); when set,
    /// `messages` is not used.
    public var promptTokens: [Int]?
    /// Stop tokens do not end the reply (vLLM's `ignore_eos`): it runs to `maxTokens` or the context.
    public var ignoreEOS = false
    /// Stop tokens cannot be sampled before this many tokens (vLLM's `min_tokens`).
    public var minTokens = 0
    /// Stream each token's log-probability with this many alternatives (0...20); nil: none.
    public var logprobs: Int?

    public init(
        messages: [ChatMessage], maxTokens: Int, sampling: SamplingParameters = .init(),
        userId: Int64 = 0, conversationId: String? = nil, requestId: String = ""
    ) {
        self.conversationId = conversationId
        self.messages = messages
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.userId = userId
        self.requestId = requestId
    }
}

public enum FinishReason: String, Sendable, Codable {
    /// End-of-turn token or a stop string.
    case stop
    /// `maxTokens` reached, or the context is full.
    case length
}

public struct GenerationUsage: Sendable, Equatable, Codable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens whose keys and values came from the prefix cache instead of being computed
    /// (OpenAI's `usage.prompt_tokens_details.cached_tokens`).
    public var cachedPromptTokens: Int
    /// The whole reply came from the response cache (no forward pass ran).
    public var cachedResponse: Bool
    public var totalTokens: Int { promptTokens + completionTokens }

    public init(promptTokens: Int, completionTokens: Int, cachedPromptTokens: Int = 0, cachedResponse: Bool = false) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedPromptTokens = cachedPromptTokens
        self.cachedResponse = cachedResponse
    }
}

/// A generated token with its log-probability under the raw model (before penalties and
/// temperature) and the most likely alternatives at its position.
public struct TokenLogprobs: Sendable, Equatable {
    public var token: Int
    public var logprob: Float
    public var top: [TokenLogprob]

    public init(token: Int, logprob: Float, top: [TokenLogprob]) {
        self.token = token
        self.logprob = logprob
        self.top = top
    }
}

/// What an engine's stream yields, in this order:
/// `.promptProcessed` once, then any number of `.logprobs` and `.text`, then `.finished` once.
/// A token's `.logprobs` (only when asked for) comes before the `.text` that holds its text.
public enum GenerationEvent: Sendable, Equatable {
    /// The prompt is in the KV cache; the first token follows. Until then the server sends pings.
    case promptProcessed(promptTokens: Int)
    /// Complete UTF-8 text (never half a character) and how many tokens produced it.
    case text(String, tokenCount: Int)
    case logprobs(TokenLogprobs)
    case finished(FinishReason, GenerationUsage)
}

/// Errors an engine may throw from `countTokens` or from its stream. The server maps them to HTTP.
public enum ChatEngineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Saturated: the client should retry after this many seconds (HTTP 429 + Retry-After).
    case busy(retryAfterSeconds: Int)
    case contextLengthExceeded(promptTokens: Int, limit: Int)
    /// The request cannot be served by this engine (HTTP 400).
    case invalidRequest(String)
    /// Anything else (HTTP 500): out of memory for KV, a kernel failure...
    case failed(String)

    public var description: String {
        switch self {
        case .busy(let s): return "the server is busy; retry after \(s) s"
        case .contextLengthExceeded(let p, let l):
            return "This model's maximum context length is \(l) tokens, but the messages use \(p) tokens."
        case .invalidRequest(let m): return m
        case .failed(let m): return "generation failed: \(m)"
        }
    }
}

/// A loaded model the server can chat with.
public protocol ChatEngine: Sendable {
    var modelInfo: ModelInfo { get }

    /// Prompt tokens `messages` take once rendered through the chat template (with the assistant
    /// header appended, as `generate` would feed them).
    func countTokens(_ messages: [ChatMessage]) throws -> Int

    /// Starts a generation. Cancelling the consuming task (which fires the stream's
    /// `onTermination`) must stop generation and free its resources within one step.
    func generate(_ request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error>

    /// Starts a generation or refuses it at once (`ChatEngineError.busy` when the queue is full,
    /// `.contextLengthExceeded`, `.invalidRequest`): the server calls this before it sends response
    /// headers, so a refusal becomes a real HTTP status (429 + Retry-After, 400). The default
    /// implementation never refuses and calls `generate`.
    func startGeneration(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error>

    /// `startGeneration`, saying whether the reply is served whole from the response cache (the
    /// server tells the client so in a header before the reply starts).
    func startGenerationReportingCache(
        _ request: GenerationRequest
    ) throws -> (stream: AsyncThrowingStream<GenerationEvent, Error>, cacheHit: Bool)

    /// Forgets what the engine keeps of a deleted conversation (its KV snapshots on disk). Blocking.
    func forgetConversation(userId: Int64, conversationId: String)

    /// Token ids valid in prompts: 0 ..< vocabularySize (0: the engine takes no token ids).
    var vocabularySize: Int { get }

    /// Token ids of `text` taken as a user's text: special-token text stays text. `addSpecial`
    /// adds the beginning-of-sequence token when the model's tokenizer uses one.
    func tokenize(_ text: String, addSpecial: Bool) throws -> [Int]

    /// The text of token ids (special tokens included), each id below `vocabularySize`.
    func detokenize(_ ids: [Int]) throws -> String

    /// The raw bytes of one token (may be part of a UTF-8 character).
    func tokenBytes(_ id: Int) -> [UInt8]

    /// Stops the engine at server shutdown and saves what should outlive the process. Blocking.
    func close()

    /// How loaded the engine is for a new prompt of `promptTokens` (routing between tiers); nil:
    /// unknown. The default is nil.
    func load(promptTokens: Int) -> TierLoad?
}

extension ChatEngine {
    public func load(promptTokens: Int) -> TierLoad? { nil }

    public func startGenerationReportingCache(
        _ request: GenerationRequest
    ) throws -> (stream: AsyncThrowingStream<GenerationEvent, Error>, cacheHit: Bool) {
        (try startGeneration(request), false)
    }

    public func forgetConversation(userId: Int64, conversationId: String) {}

    public var vocabularySize: Int { 0 }
    public func tokenize(_ text: String, addSpecial: Bool) throws -> [Int] {
        throw ChatEngineError.invalidRequest("this model has no tokenizer to expose")
    }
    public func detokenize(_ ids: [Int]) throws -> String {
        throw ChatEngineError.invalidRequest("this model has no tokenizer to expose")
    }
    public func tokenBytes(_ id: Int) -> [UInt8] { [] }
    public func close() {}

    public func startGeneration(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        generate(request)
    }
}
