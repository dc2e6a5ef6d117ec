import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Logging
import ServiceLifecycle
import UnixSignals

/// On graceful shutdown: refuse new replies, give running ones `drainTimeout`, then stop the rest,
/// which their streams store as interrupted. Listed after the HTTP server in the service group so
/// that it is shut down first (groups shut down in reverse order): by the time the server waits
/// for its open connections, no reply is left running.
struct DrainService: Service {
    let registry: GenerationRegistry
    let timeout: Duration
    let logger: Logger

    func run() async throws {
        // Returns when shutdown starts (or throws when the group is cancelled: drain all the same).
        try? await gracefulShutdown()
        let running = await registry.runningCount
        logger.info("shutting down", metadata: ["running_replies": "\(running)"])
        let cancelled = await registry.drain(timeout: timeout)
        logger.info("replies drained", metadata: ["interrupted": "\(cancelled)"])
    }
}

/// Where and how the server listens.
public struct ListenerSettings: Sendable {
    public var host: String
    /// 0 picks a free port (`onServerRunning` gets the bound one).
    public var port: Int
    /// HTTPS when set: HTTP/2 where the client offers it (ALPN), else HTTP/1.1. Plain HTTP/1.1 when nil.
    public var tls: TLSConfiguration?
    public var limits: ConnectionLimits
    /// A second address that serves only `GET /metrics`, without a key, for a Prometheus scraper.
    public var metricsAddress: HostAndPort?

    public init(
        host: String = "127.0.0.1", port: Int = 8080, tls: TLSConfiguration? = nil, limits: ConnectionLimits = .init(),
        metricsAddress: HostAndPort? = nil
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.limits = limits
        self.metricsAddress = metricsAddress
    }
}

public struct HostAndPort: Sendable, Equatable {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// The HTTP application over `service`: what `sarvam serve` runs and what the tests drive
/// (`app.test(.router)` or `.live`). `onServerRunning` gets the bound port (0 picks a free one).
public func buildApplication(
    _ service: ChatService, host: String, port: Int,
    onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    // Opaque result types must come from one expression: the general form with default settings.
    buildApplication(service, listener: ListenerSettings(host: host, port: port), onServerRunning: onServerRunning)
}

public func buildApplication(
    _ service: ChatService, listener: ListenerSettings,
    onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    Application(
        router: buildRouter(service),
        server: serverBuilder(listener),
        configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: "sarvam"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? listener.port) },
        logger: service.logger)
}

/// The listener for `ListenerSettings.metricsAddress`: `GET /metrics` only, no key.
public func buildMetricsApplication(
    address: HostAndPort, logger: Logger, onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    Application(
        router: buildMetricsRouter(),
        server: serverBuilder(ListenerSettings(host: address.host, port: address.port)),
        configuration: .init(address: .hostname(address.host, port: address.port), serverName: "sarvam"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? address.port) },
        logger: logger)
}

/// HTTP/1.1, or TLS with HTTP/2 offered, each connection under the limits (see `GuardedChildChannel`
/// and `RequestTimeoutHandler`).
func serverBuilder(_ listener: ListenerSettings) -> HTTPServerBuilder {
    let limits = listener.limits
    let counter = ConnectionCounter(limit: limits.maxConnections)
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [
            RequestTimeoutHandler(headerTimeout: limits.headerTimeout, idleTimeout: limits.idleTimeout), ClientHangUpHandler(),
        ])
    guard let tls = listener.tls else {
        return HTTPServerBuilder { responder in
            GuardedChildChannel(
                base: HTTP1Channel(responder: responder, configuration: http1), counter: counter, handshakeTimeout: limits.headerTimeout)
        }
    }
    // HTTP/2: the stream handlers get the same per-request timers; a connection without open
    // streams is closed after the idle timeout.
    let http2 = HTTP2ChannelConfiguration(idleTimeout: limits.idleTimeout, streamConfiguration: http1)
    return HTTPServerBuilder { responder in
        GuardedChildChannel(
            base: try HTTP2UpgradeChannel(tlsConfiguration: tls, configuration: http2, responder: responder), counter: counter,
            handshakeTimeout: limits.headerTimeout)
    }
}

/// Runs the server until SIGINT/SIGTERM, then drains (see `DrainService`). The caller closes the
/// database afterwards.
public func runChatServer(
    _ service: ChatService, listener: ListenerSettings,
    onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in },
    onMetricsRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) async throws {
    let app = buildApplication(service, listener: listener, onServerRunning: onServerRunning)
    var services: [any Service] = [app]
    if let address = listener.metricsAddress {
        services.append(buildMetricsApplication(address: address, logger: service.logger, onServerRunning: onMetricsRunning))
    }
    services.append(DrainService(registry: service.registry, timeout: service.configuration.drainTimeout, logger: service.logger))
    let group = ServiceGroup(
        configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: service.logger))
    try await group.run()
}
