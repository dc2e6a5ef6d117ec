import Foundation
import ChatServer

/// A deterministic `ChatEngine` for the server tests: it "tokenizes"
/// as one token per 4 UTF-8 bytes, and streams a scripted reply one piece (= one token) at a time
/// with controllable delays. It counts what it did so tests can check that cancellation stops it.
public final class FakeEngine: ChatEngine, @unchecked Sendable {
    public struct Script: Sendable {
        /// Time spent "processing the prompt" before `.promptProcessed`.
        public var promptDelay: Duration
        /// Time before each text piece.
        public var tokenDelay: Duration
        /// The reply's pieces for a conversation; each piece counts as one token.
        public var reply: @Sendable ([ChatMessage]) -> [String]
        /// Thrown from the stream right after `.promptProcessed` when set.
        public var failure: ChatEngineError?
        /// Thrown synchronously by `startGeneration` when set (a full queue: `.busy`).
        public var refusal: ChatEngineError?
        /// Generations accepted at once; beyond it `startGeneration` refuses with `.busy`, as a
        /// real engine's full queue does.
        public var capacity: Int?

        public init(
            promptDelay: Duration = .zero, tokenDelay: Duration = .zero,
            reply: @escaping @Sendable ([ChatMessage]) -> [String] = FakeEngine.echoReply,
            failure: ChatEngineError? = nil, refusal: ChatEngineError? = nil, capacity: Int? = nil
        ) {
            self.promptDelay = promptDelay
            self.tokenDelay = tokenDelay
            self.reply = reply
            self.failure = failure
            self.refusal = refusal
            self.capacity = capacity
        }
    }

    /// "You said: <last user message>", one word (with its trailing space) per piece.
    public static let echoReply: @Sendable ([ChatMessage]) -> [String] = { messages in
        let last = messages.last(where: { $0.role == .user })?.content ?? ""
        return FakeEngine.pieces(of: "You said: " + last)
    }

    /// Splits text into word pieces that concatenate back to it exactly.
    public static func pieces(of text: String) -> [String] {
        var out: [String] = []
        var current = ""
        for ch in text {
            current.append(ch)
            if ch == " " { out.append(current); current = "" }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// One token per 4 UTF-8 bytes, rounded up.
    public static func tokenCount(_ text: String) -> Int { (text.utf8.count + 3) / 4 }

    public let modelInfo: ModelInfo
    private let lock = NSLock()
    private var _script: Script
    private var _requests: [GenerationRequest] = []
    private var _active = 0
    private var _piecesEmitted = 0
    private var _cancelled = 0
    private var _forgotten: [String] = []

    private var _load: TierLoad?

    public init(id: String = "fake-model", contextLength: Int = 2048, parameters: Int? = nil, script: Script = Script()) {
        self.modelInfo = ModelInfo(id: id, contextLength: contextLength, ownedBy: "sarvam-test", parameters: parameters)
        self._script = script
    }

    /// What `load(promptTokens:)` answers (nil: unknown).
    public var currentLoad: TierLoad? {
        get { lock.withLock { _load } }
        set { lock.withLock { _load = newValue } }
    }
    public func load(promptTokens: Int) -> TierLoad? { currentLoad }

    public var script: Script {
        get { lock.withLock { _script } }
        set { lock.withLock { _script = newValue } }
    }
    /// Every request `generate` received, in order.
    public var requests: [GenerationRequest] { lock.withLock { _requests } }
    /// Generations whose producer task is still running (0 once cancellation has stopped them).
    public var activeGenerations: Int { lock.withLock { _active } }
    /// Text pieces yielded so far, over all generations.
    public var piecesEmitted: Int { lock.withLock { _piecesEmitted } }
    /// Generations stopped by cancellation before they finished (a real engine counts these as
    /// `outcome="cancelled"`).
    public var cancelledGenerations: Int { lock.withLock { _cancelled } }
    /// "user/conversation" of every `forgetConversation` call, in order.
    public var forgotten: [String] { lock.withLock { _forgotten } }

    public func forgetConversation(userId: Int64, conversationId: String) {
        lock.withLock { _forgotten.append("\(userId)/\(conversationId)") }
    }

    /// 2 tokens of assistant header, plus 4 per message for its role markers, plus its text.
    public func countTokens(_ messages: [ChatMessage]) throws -> Int {
        messages.reduce(2) { $0 + 4 + Self.tokenCount($1.content) }
    }

    public func startGeneration(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        if let refusal = script.refusal { throw refusal }
        if let capacity = script.capacity, activeGenerations >= capacity { throw ChatEngineError.busy(retryAfterSeconds: 2) }
        return generate(request)
    }

    public func generate(_ request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error> {
        let script: Script = lock.withLock {
            _requests.append(request)
            _active += 1
            return _script
        }
        let promptTokens = (try? countTokens(request.messages)) ?? 0
        return AsyncThrowingStream { continuation in
            let task = Task {
                defer { self.lock.withLock { self._active -= 1 } }
                do {
                    try await Task.sleep(for: script.promptDelay)
                    continuation.yield(.promptProcessed(promptTokens: promptTokens))
                    if let failure = script.failure { throw failure }
                    var produced = 0
                    var reason = FinishReason.stop
                    for piece in script.reply(request.messages) {
                        if produced == request.maxTokens { reason = .length; break }
                        try await Task.sleep(for: script.tokenDelay)
                        try Task.checkCancellation()
                        continuation.yield(.text(piece, tokenCount: 1))
                        produced += 1
                        self.lock.withLock { self._piecesEmitted += 1 }
                    }
                    continuation.yield(.finished(reason, GenerationUsage(promptTokens: promptTokens, completionTokens: produced)))
                    continuation.finish()
                } catch {
                    if error is CancellationError { self.lock.withLock { self._cancelled += 1 } }
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
