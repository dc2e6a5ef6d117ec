import AsyncHTTPClient
import Foundation
import Logging
import NIOCore

/// The configured upstreams and the HTTP client they share. Owns the client: `shutdown` must run
/// before the process ends.
public final class Upstreams: Sendable {
    public let providers: [UpstreamProvider]
    private let client: HTTPClient

    public init(_ configurations: [UpstreamConfiguration], logger: Logger) {
        var configuration = HTTPClient.Configuration()
        let connect = configurations.map(\.firstByteTimeout).min() ?? .seconds(10)
        configuration.timeout = .init(connect: .nanoseconds(min(connect, .seconds(10)).nanoseconds))
        configuration.redirectConfiguration = .disallow
        // A refused connection fails the request at once (502) instead of being retried with
        // backoff until the connect timeout: the refresher does the retrying.
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.client = client
        providers = configurations.map { UpstreamProvider(configuration: $0, client: client, logger: logger) }
    }

    /// Reads every model list in the background, at once and then periodically; the server does not
    /// wait for them (an upstream that does not answer is retried).
    public func start() {
        for provider in providers { provider.start() }
    }

    public var models: [ModelInfo] { providers.flatMap(\.models) }

    /// The engine for `NAME/MODEL` when NAME is an upstream; nil when it is not one.
    func engine(named model: String) throws -> (any ChatEngine)? {
        guard let slash = model.firstIndex(of: "/") else { return nil }
        let name = model[..<slash]
        guard let provider = providers.first(where: { $0.name == name }) else { return nil }
        return try provider.engine(model: String(model[model.index(after: slash)...]))
    }

    public func shutdown() async {
        for provider in providers { provider.stop() }
        try? await client.shutdown()
    }
}
