import Foundation
import Hummingbird
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

/// The HTTP application over `service`: what `sarvam serve` runs and what the tests drive
/// (`app.test(.router)` or `.live`). `onServerRunning` gets the bound port (0 picks a free one).
public func buildApplication(
    _ service: ChatService, host: String, port: Int,
    onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    Application(
        router: buildRouter(service),
        configuration: .init(address: .hostname(host, port: port), serverName: "sarvam"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
        logger: service.logger)
}

/// Runs the server until SIGINT/SIGTERM, then drains (see `DrainService`). The caller closes the
/// database afterwards.
public func runChatServer(
    _ service: ChatService, host: String, port: Int,
    onServerRunning: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) async throws {
    let app = buildApplication(service, host: host, port: port, onServerRunning: onServerRunning)
    let group = ServiceGroup(
        configuration: .init(
            services: [app, DrainService(registry: service.registry, timeout: service.configuration.drainTimeout, logger: service.logger)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: service.logger))
    try await group.run()
}
