import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Per-request facts the handlers fill in and the request log reads after the response is written
/// (the token counts of a streamed reply are known only at its end).
public final class RequestStats: @unchecked Sendable {
    private let lock = NSLock()
    private var _userId: Int64?
    private var _promptTokens: Int?
    private var _completionTokens: Int?
    private var _outcome: String?
    private var _firstTokenAt: ContinuousClock.Instant?
    private var _route: (tier: String, reason: RoutingReason)?

    public init() {}

    /// The stats of the request the current task serves (bound by `RequestLogMiddleware` around the
    /// handler and the body writer), so code far from the context can note facts such as the first token.
    @TaskLocal static var current: RequestStats?

    /// When the first generated text went to the client (the first call counts).
    func noteFirstToken() {
        lock.withLock { if _firstTokenAt == nil { _firstTokenAt = .now } }
    }
    var firstTokenAt: ContinuousClock.Instant? { lock.withLock { _firstTokenAt } }

    /// The tier (or overflow upstream model) an `auto` request went to and why (response headers and the log).
    func noteRoute(_ choice: EngineChoice) {
        guard let tier = choice.tier, let reason = choice.reason else { return }
        lock.withLock { _route = (tier, reason) }
    }
    var route: (tier: String, reason: RoutingReason)? { lock.withLock { _route } }

    public var userId: Int64? {
        get { lock.withLock { _userId } }
        set { lock.withLock { _userId = newValue } }
    }
    public func record(usage: GenerationUsage, outcome: String) {
        lock.withLock {
            _promptTokens = usage.promptTokens
            _completionTokens = usage.completionTokens
            _outcome = outcome
        }
    }
    var snapshot: (userId: Int64?, prompt: Int?, completion: Int?, outcome: String?) {
        lock.withLock { (_userId, _promptTokens, _completionTokens, _outcome) }
    }
}

/// The request context of every route: the authenticated user (set by `AuthMiddleware`), the
/// stats for the request log, and the connection (to notice a client that hangs up).
public struct ServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var user: User?
    /// The SHA-256 of the session when the request was signed in by the session cookie.
    public var sessionHash: Data?
    public let stats = RequestStats()
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The authenticated user (routes behind `AuthMiddleware` always have one).
    public func requireUser() throws -> User {
        guard let user else {
            throw APIError.unauthorized("Missing API key or session. Send the header 'Authorization: Bearer <key>', or sign in.")
        }
        return user
    }
}
