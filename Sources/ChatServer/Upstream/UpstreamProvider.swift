import AsyncHTTPClient
import Foundation
import Logging
import NIOCore

/// One upstream: its model list, read at start and again every `refreshInterval` (every
/// `retryInterval` while it does not answer, and at once after a request could not reach it), and
/// the per-user count of requests running on it. While its list cannot be read its models are not
/// offered and requests naming it get 502.
public final class UpstreamProvider: @unchecked Sendable {
    enum State: Sendable {
        /// Not asked yet.
        case unknown
        case listed([ModelInfo])
        /// The last attempt failed, with why.
        case unreachable(String)
    }

    public let configuration: UpstreamConfiguration
    let client: HTTPClient
    let logger: Logger
    let metrics: UpstreamMetrics
    private let lock = NSLock()
    private var state: State = .unknown
    private var running: [Int64: Int] = [:]
    private var refresher: Task<Void, Never>?
    /// Resumes the refresher's sleep early (a request found the upstream gone).
    private var wake: AsyncStream<Void>.Continuation?

    init(configuration: UpstreamConfiguration, client: HTTPClient, logger: Logger) {
        self.configuration = configuration
        self.client = client
        self.logger = logger
        self.metrics = UpstreamMetrics(upstream: configuration.name)
    }

    public var name: String { configuration.name }

    /// The models offered now (`NAME/MODEL`), empty while the list cannot be read.
    public var models: [ModelInfo] {
        if case .listed(let models) = lock.withLock({ state }) { return models }
        return []
    }

    /// The engine for `model` (the part after `NAME/`): 502 while the upstream cannot be reached,
    /// 404 when it does not list the model.
    func engine(model: String) throws -> UpstreamChatEngine {
        switch lock.withLock({ state }) {
        case .unknown: throw UpstreamErrors.unavailable(name, "its model list has not been read yet; retry shortly")
        case .unreachable(let why): throw UpstreamErrors.unavailable(name, why)
        case .listed(let models):
            let id = name + "/" + model
            guard let info = models.first(where: { $0.id == id }) else {
                throw APIError.modelNotFound(id, available: models.map(\.id))
            }
            return UpstreamChatEngine(provider: self, remoteModel: model, modelInfo: info)
        }
    }

    // MARK: The model list

    /// Starts the refresher: a first read at once, then periodic ones.
    func start() {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        lock.withLock { self.wake = wake }
        refresher = Task { [self] in
            var iterator = wakes.makeAsyncIterator()
            while !Task.isCancelled {
                let ok = await refresh()
                let pause = ok ? configuration.refreshInterval : configuration.retryInterval
                // Whichever comes first: the pause, or a request that found the upstream gone.
                let sleeper = Task {
                    try? await Task.sleep(for: pause)
                    wake.yield()
                }
                _ = await iterator.next()
                sleeper.cancel()
            }
        }
    }

    func stop() {
        refresher?.cancel()
        lock.withLock { wake?.finish() }
    }

    /// A request could not reach the upstream: read the list again now, so that later requests get
    /// their 502 at once, before any response starts, until it answers again.
    func reportUnreachable() {
        _ = lock.withLock { wake?.yield() }
    }

    /// Reads `/v1/models` once; true when it answered.
    @discardableResult
    func refresh() async -> Bool {
        do {
            let models = try await listModels()
            let previous = lock.withLock { () -> State in
                defer { state = .listed(models) }
                return state
            }
            if case .listed(let old) = previous, old.map(\.id) == models.map(\.id) {
            } else {
                logger.info(
                    "upstream listed", metadata: ["upstream": "\(name)", "models": "\(models.map(\.id).joined(separator: ","))"])
            }
            metrics.up.record(1)
            return true
        } catch {
            let why = UpstreamChatEngine.describe(error)
            let previous = lock.withLock { () -> State in
                defer { state = .unreachable(why) }
                return state
            }
            if case .unreachable = previous {
            } else {
                logger.warning(
                    "upstream unreachable; retrying",
                    metadata: ["upstream": "\(name)", "url": "\(configuration.modelsURL)", "error": "\(why)"])
            }
            metrics.up.record(0)
            return false
        }
    }

    private func listModels() async throws -> [ModelInfo] {
        var request = HTTPClientRequest(url: configuration.modelsURL)
        request.method = .GET
        if let key = configuration.key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        let response = try await client.execute(request, timeout: .nanoseconds(Int64(configuration.firstByteTimeout.nanoseconds)))
        let body = try await response.body.collect(upTo: 8 << 20)
        let text = String(buffer: body)
        guard response.status.code < 300 else {
            throw UpstreamSettingError("GET /v1/models answered HTTP \(response.status.code): \(text.prefix(300))")
        }
        let list = try JSONDecoder().decode(UpstreamModelList.self, from: Data(text.utf8))
        return list.data.map {
            ModelInfo(
                id: name + "/" + $0.id, contextLength: $0.contextLength ?? configuration.defaultContextLength, ownedBy: name,
                created: $0.created ?? Int(Date().timeIntervalSince1970))
        }
    }

    // MARK: Per-user limit

    /// Counts a request of `userId`, or refuses it (429) when the user has `maxRequestsPerUser` running.
    func admit(userId: Int64) throws {
        try lock.withLock {
            let n = running[userId, default: 0]
            guard n < configuration.maxRequestsPerUser else { throw ChatEngineError.busy(retryAfterSeconds: 1) }
            running[userId] = n + 1
        }
    }

    func release(userId: Int64) {
        lock.withLock {
            let n = running[userId, default: 1] - 1
            running[userId] = n > 0 ? n : nil
        }
    }
}

/// `GET /v1/models` as OpenAI (and we, with `context_length`) answer it.
struct UpstreamModelList: Decodable {
    struct Model: Decodable {
        var id: String
        var created: Int?
        var contextLength: Int?
        enum CodingKeys: String, CodingKey { case id, created, contextLength = "context_length" }
    }
    var data: [Model]
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
