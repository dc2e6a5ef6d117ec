import Foundation
import HTTPTypes
import Hummingbird
import Logging

public struct ChatServerConfiguration: Sendable {
    /// Requests with a larger body are refused with 413.
    public var maxBodyBytes: Int
    /// Silence after which a stream gets a `: ping` comment.
    public var pingInterval: Duration
    /// On shutdown, how long running replies may go on before they are stopped and stored as interrupted.
    public var drainTimeout: Duration
    /// Tokens kept free for the reply when a conversation's history is fitted into the context.
    public var replyReserve: Int
    /// How often a streamed reply's text is written to the store while it grows (see `ReplyJournal`).
    public var replyFlushInterval: Duration
    /// Whether the session cookie is marked `Secure` (the server speaks TLS).
    public var secureCookies: Bool
    /// How long a sign-in session lasts.
    public var sessionLifetime: Duration

    public init(
        maxBodyBytes: Int = 4 << 20, pingInterval: Duration = .seconds(3),
        drainTimeout: Duration = .seconds(15), replyReserve: Int = 512, replyFlushInterval: Duration = .seconds(1),
        secureCookies: Bool = false, sessionLifetime: Duration = Accounts.defaultSessionLifetime
    ) {
        self.maxBodyBytes = maxBodyBytes
        self.pingInterval = pingInterval
        self.drainTimeout = drainTimeout
        self.replyReserve = replyReserve
        self.replyFlushInterval = replyFlushInterval
        self.secureCookies = secureCookies
        self.sessionLifetime = sessionLifetime
    }
}

/// Everything the routes share: models, store, accounts, running replies.
public struct ChatService: Sendable {
    public let catalog: EngineCatalog
    public let store: any ChatStore
    public let accounts: Accounts
    public let quotas: Quotas
    /// Picks the tier of `"model": "auto"` requests.
    public let tierRouter: TierRouter
    public let registry: GenerationRegistry
    public let configuration: ChatServerConfiguration
    public let logger: Logger
    /// Failed sign-ins by account and client address, in this process's memory.
    public let signInLimiter: SignInLimiter

    public init(
        catalog: EngineCatalog, store: any ChatStore, configuration: ChatServerConfiguration = .init(),
        quotaDefaults: QuotaLimits = QuotaLimits(), tierRouting: TierRouter.Settings = .init(),
        logger: Logger = Logger(label: "sarvam.server"), signInLimiter: SignInLimiter = SignInLimiter(),
        passwordCost: UInt8 = Accounts.defaultPasswordCost
    ) {
        self.catalog = catalog
        self.store = store
        self.accounts = Accounts(store: store, passwordCost: passwordCost)
        self.signInLimiter = signInLimiter
        self.quotas = Quotas(store: store, defaults: quotaDefaults)
        self.tierRouter = TierRouter(settings: tierRouting)
        self.registry = GenerationRegistry()
        self.configuration = configuration
        self.logger = logger
    }

    /// Room for the reply: what the client asked for, capped so a long reply cannot starve history.
    func replyReserve(requested: Int?, contextLength: Int) -> Int {
        min(requested ?? configuration.replyReserve, max(1, contextLength / 2))
    }
}

/// All routes. Tests drive this through `app.test(.router)`. Every GET route answers HEAD too
/// (headers only).
public func buildRouter(_ service: ChatService) -> Router<ServerContext> {
    let router = Router(context: ServerContext.self, options: .autoGenerateHeadEndpoints)
    router.add(middleware: RequestLogMiddleware(logger: service.logger, quotas: service.quotas))

    WebPage.addRoutes(to: router)
    APIContract.addRoutes(to: router)
    router.get("/health") { _, _ -> EditedResponse<HealthResponse> in
        let draining = await service.registry.draining
        switch service.catalog.state {
        case .ready where !draining:
            do {
                try await service.store.checkHealth()
            } catch {
                return EditedResponse(
                    status: .serviceUnavailable, response: HealthResponse(status: "store_unavailable", error: "\(error)"))
            }
            return EditedResponse(status: .ok, response: HealthResponse(status: "ok", models: service.catalog.models.map(\.id)))
        case .ready:
            return EditedResponse(status: .serviceUnavailable, response: HealthResponse(status: "shutting_down"))
        case .loading:
            return EditedResponse(status: .serviceUnavailable, response: HealthResponse(status: "loading"))
        case .failed(let message):
            return EditedResponse(status: .serviceUnavailable, response: HealthResponse(status: "failed", error: message))
        }
    }

    let auth = AuthMiddleware(accounts: service.accounts)
    // Prometheus text, for the admin key only: it shows every user's traffic. A scraper without a
    // key uses the separate metrics listener (`ListenerSettings.metricsAddress`).
    router.group("metrics").add(middleware: auth).get { _, context -> Response in
        guard try context.requireUser().isAdmin else { throw APIError.forbidden("/metrics needs an admin's API key.") }
        return metricsResponse()
    }
    let v1 = router.group("v1").add(middleware: auth)
    OpenAIController(service: service).addRoutes(to: v1)
    let sessions = SessionController(service: service)
    sessions.addPublicRoutes(to: router.group("api"))
    TokenizeController(service: service).addRoutes(to: router, auth: auth)
    let api = router.group("api").add(middleware: auth)
    sessions.addRoutes(to: api)
    ConversationsController(service: service).addRoutes(to: api)
    AdminController(service: service).addRoutes(to: api)
    QuotaController(service: service).addRoutes(to: api)
    return router
}

/// The router of the metrics listener: `GET /metrics` (and HEAD), no key, nothing else.
func buildMetricsRouter() -> Router<ServerContext> {
    let router = Router(context: ServerContext.self, options: .autoGenerateHeadEndpoints)
    router.get("/metrics") { _, _ in metricsResponse() }
    return router
}

func metricsResponse() -> Response {
    var headers = HTTPFields()
    headers[.contentType] = SarvamMetrics.contentType
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: SarvamMetrics.render())))
}

/// `GET /health`: `ok` with the models, or why not (`loading`, `failed` with the error, `shutting_down`,
/// `store_unavailable` with the error when the database does not answer).
struct HealthResponse: APIResponse {
    var status: String
    var models: [String]?
    var error: String?
}

/// An SSE response whose body is produced by `produce`, which gets a function writing one frame
/// (escaping so that concurrent writers, such as the choices of one reply, may share it; it must
/// not be called after `produce` returns).
func sseResponse(
    _ produce: @escaping @Sendable (_ write: @escaping @Sendable (String) async throws -> Void) async throws -> Void
) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/event-stream"
    headers[.cacheControl] = "no-cache"
    headers[HTTPField.Name("X-Accel-Buffering")!] = "no"  // nginx: do not buffer the stream
    let body = ResponseBody { writer in
        let box = WriterBox(writer)
        try await produce { frame in try await box.write(frame) }
        try await box.finish()
    }
    return Response(status: .ok, headers: headers, body: body)
}

/// Lets a `@Sendable` closure write to the (non-Sendable) body writer. Writes are sequential: the
/// producer awaits each one before the next.
private final class WriterBox: @unchecked Sendable {
    var writer: any ResponseBodyWriter
    init(_ writer: any ResponseBodyWriter) { self.writer = writer }
    func write(_ frame: String) async throws { try await writer.write(ByteBuffer(string: frame)) }
    func finish() async throws { try await writer.finish(nil) }
}

extension HTTPField.Name {
    /// `hit` when the reply was served whole from the response cache.
    static let sarvamCache = HTTPField.Name("X-Sarvam-Cache")!
    /// `light` or `heavy`, or the overflow upstream's `NAME/MODEL`: what served a `"model": "auto"` request.
    static let sarvamTier = HTTPField.Name("X-Sarvam-Tier")!
    /// Why that tier (`RoutingReason`).
    static let sarvamTierReason = HTTPField.Name("X-Sarvam-Tier-Reason")!
    /// A client's request for the heavy tier under `"model": "auto"` (`1`/`true`).
    static let sarvamThinkHarder = HTTPField.Name("X-Sarvam-Think-Harder")!
}
